//! ListForUser and CheckCode: reading invitations.

use super::*;

impl Invitations {
    #[tracing::instrument(name = "db.list", skip_all, fields(db.system = "postgresql"))]
    pub async fn list(&self, query: ListQuery) -> Result<ListPage, Error> {
        let scope = list_scope(&query);
        let after = if query.page_token.is_empty() {
            None
        } else {
            let cursor = self.page_tokens.decode(&query.page_token, &scope).ok_or_else(bad_page_token)?;
            Some(Uuid::from_slice(&cursor).map_err(|_| bad_page_token())?)
        };
        let mut conn = self.pool.acquire().await?;
        let owner = query.owner.as_ref().map(UserId::as_str);
        let mut rows = self.reveal(
            invitations::page_for_owner(&mut conn, owner, query.state, after, i64::from(query.page_size) + 1).await?,
        );
        let next_page_token = if rows.len() > query.page_size as usize {
            rows.truncate(query.page_size as usize);
            rows.last().map(|r| self.page_tokens.encode(&scope, r.id.as_bytes())).unwrap_or_default()
        } else {
            String::new()
        };
        let (inviter_id, next_grant_time) = match owner {
            Some(user) => (graph::inviter_of(&mut conn, user).await?, self.next_grant_time(&mut conn, user).await?),
            None => (None, None),
        };
        Ok(ListPage { invitations: rows, next_page_token, inviter_id, next_grant_time })
    }

    #[tracing::instrument(name = "db.check", skip_all, fields(db.system = "postgresql"))]
    pub async fn check(&self, code: &InvitationCode) -> Result<CodeCheck, Error> {
        let mut conn = self.pool.acquire().await?;
        let Some(invitation) = invitations::by_code_hash(&mut conn, &self.code_hashes(code)).await? else {
            return Ok(CodeCheck { invitation: None, refusal: Some(Error::CodeNotFound), reserved_uses: 0 });
        };
        let (refusal, reserved_uses) = reservation::availability(&mut conn, &invitation).await?;
        Ok(CodeCheck { invitation: Some(invitation), refusal, reserved_uses })
    }
}

fn list_scope(query: &ListQuery) -> Vec<u8> {
    let mut scope = b"list\0".to_vec();
    match &query.owner {
        Some(user) => {
            scope.push(b'u');
            scope.extend_from_slice(user.as_str().as_bytes());
        }
        None => scope.push(b'-'),
    }
    scope.push(0);
    scope.push(match query.state {
        None => b'*',
        Some(State::Unspent) => b'u',
        Some(State::Redeemed) => b'r',
        Some(State::Revoked) => b'v',
        Some(State::Expired) => b'e',
    });
    scope
}
