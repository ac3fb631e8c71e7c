//! GetInviteGraph: a member, its ancestors and its direct invitees.

use super::*;

impl Invitations {
    #[tracing::instrument(name = "db.graph", skip_all, fields(db.system = "postgresql"))]
    pub async fn graph(&self, query: GraphQuery) -> Result<GraphView, Error> {
        let scope = [b"graph\0".as_slice(), query.user.as_str().as_bytes()].concat();
        let after = if query.page_token.is_empty() {
            None
        } else {
            let cursor = self.page_tokens.decode(&query.page_token, &scope).ok_or_else(bad_page_token)?;
            let bytes: [u8; 8] = cursor.try_into().map_err(|_| bad_page_token())?;
            Some(i64::from_be_bytes(bytes))
        };
        let mut conn = self.pool.acquire().await?;
        let Some(member) = graph::member(&mut conn, query.user.as_str()).await? else {
            return Err(Error::NotFound { what: "member", field: "user_id" });
        };
        let ancestors = graph::ancestors(&mut conn, query.user.as_str()).await?;
        let mut page =
            graph::invitees_page(&mut conn, query.user.as_str(), after, i64::from(query.page_size) + 1).await?;
        let next_page_token = if page.len() > query.page_size as usize {
            page.truncate(query.page_size as usize);
            page.last().map(|(id, _)| self.page_tokens.encode(&scope, &id.to_be_bytes())).unwrap_or_default()
        } else {
            String::new()
        };
        let descendants = page.into_iter().map(|(_, m)| m).collect();
        Ok(GraphView { member, ancestors, descendants, next_page_token })
    }
}
