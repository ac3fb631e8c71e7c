//! The domain operations: mint, list, redeem, check, revoke, graph. Each opens
//! and commits its own transaction through `store`; none knows about gRPC.
//! Idempotent operations store the caller's encoded answer in the same
//! transaction as the change (AIP-155), so a replay returns it byte for byte.

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::code::{CodeGenerator, InvitationCode};
use crate::domain::{Invitation, Member, RequestId, State, UserId};
use crate::error::Error;
use crate::page_token::PageTokens;
use crate::store::{self, graph, idempotency, invitations};

/// Attempts for a transaction that lost a deadlock or a unique-key race.
const MAX_ATTEMPTS: usize = 5;

/// An idempotency key and how to turn an answer into the bytes stored for it.
pub struct Idempotency<'a, T> {
    pub request_id: Option<RequestId>,
    /// SHA-256 of the whole request: the same id with another request is refused.
    pub request_hash: [u8; 32],
    pub encode: &'a (dyn Fn(&T) -> Vec<u8> + Sync),
}

/// A fresh answer, or the stored bytes of the first answer to this request id.
pub enum Answer<T> {
    Fresh(T),
    Replayed(Vec<u8>),
}

pub struct MintCommand {
    pub owners: Vec<UserId>,
    pub per_user: u32,
    pub unowned: u32,
    pub ttl: Option<time::Duration>,
    pub max_uses: u32,
    pub label: String,
    pub note: String,
    pub minted_by: String,
    pub dry_run: bool,
}

pub struct MintOutcome {
    pub invitations: Vec<Invitation>,
    pub batch_id: Option<Uuid>,
    pub count: u32,
    pub dry_run: bool,
}

pub struct ListQuery {
    /// None lists the unowned invitations.
    pub owner: Option<UserId>,
    pub state: Option<State>,
    pub page_size: u32,
    pub page_token: String,
}

pub struct ListPage {
    pub invitations: Vec<Invitation>,
    pub next_page_token: String,
    pub inviter_id: Option<String>,
}

pub struct RedeemCommand {
    pub code: InvitationCode,
    pub invitee: UserId,
}

pub struct Redemption {
    pub invitation: Invitation,
    pub invitee_id: String,
    pub redeem_time: OffsetDateTime,
}

/// CheckCode's answer: the invitation when the code exists, and why it
/// cannot be redeemed, if it cannot.
pub struct CodeCheck {
    pub invitation: Option<Invitation>,
    pub refusal: Option<Error>,
}

pub enum RevokeTarget {
    Ids(Vec<Uuid>),
    UnspentOf(UserId),
}

pub struct RevokeCommand {
    pub target: RevokeTarget,
    pub reason: String,
    pub revoked_by: String,
}

pub struct RevokeOutcome {
    pub invitations: Vec<Invitation>,
    pub revoked_count: u32,
}

pub struct GraphQuery {
    pub user: UserId,
    pub page_size: u32,
    pub page_token: String,
}

pub struct GraphView {
    pub member: Member,
    pub ancestors: Vec<Member>,
    pub descendants: Vec<Member>,
    pub next_page_token: String,
}

pub struct Invitations {
    pool: PgPool,
    codes: CodeGenerator,
    page_tokens: PageTokens,
}

impl Invitations {
    pub fn new(pool: PgPool, codes: CodeGenerator, page_tokens: PageTokens) -> Self {
        Self { pool, codes, page_tokens }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Looks up a stored answer for the request id; refuses a reused id.
    async fn replay<T>(&self, method: &str, idem: &Idempotency<'_, T>) -> Result<Option<Vec<u8>>, Error> {
        let Some(request_id) = &idem.request_id else { return Ok(None) };
        let mut conn = self.pool.acquire().await?;
        match idempotency::find(&mut conn, method, request_id.as_str()).await? {
            Some(record) if record.request_hash == idem.request_hash => Ok(Some(record.response)),
            Some(_) => Err(Error::RequestIdReused),
            None => Ok(None),
        }
    }

    /// Stores the answer in `tx`; `false` if a concurrent twin stored first
    /// (the caller then rolls back and replays the twin's answer).
    async fn remember<T>(
        tx: &mut store::Tx<'_>,
        method: &str,
        idem: &Idempotency<'_, T>,
        answer: &T,
    ) -> Result<bool, Error> {
        let Some(request_id) = &idem.request_id else { return Ok(true) };
        let bytes = (idem.encode)(answer);
        Ok(idempotency::insert(tx, method, request_id.as_str(), &idem.request_hash, &bytes).await?)
    }

    pub async fn mint(
        &self,
        cmd: MintCommand,
        idem: Idempotency<'_, MintOutcome>,
    ) -> Result<Answer<MintOutcome>, Error> {
        let count = cmd.owners.len() as u32 * cmd.per_user + cmd.unowned;
        if cmd.dry_run {
            return Ok(Answer::Fresh(MintOutcome { invitations: vec![], batch_id: None, count, dry_run: true }));
        }
        if let Some(bytes) = self.replay("Mint", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let expire_time = cmd.ttl.map(|ttl| OffsetDateTime::now_utc() + ttl);
        let batch = invitations::BatchAttributes {
            id: Uuid::now_v7(),
            label: &cmd.label,
            note: &cmd.note,
            minted_by: &cmd.minted_by,
            max_uses: cmd.max_uses as i32,
            expire_time,
        };
        let owners: Vec<String> = cmd.owners.iter().map(|u| u.as_str().to_owned()).collect();
        let mut rows = Vec::with_capacity(count as usize);
        for owner in &owners {
            for _ in 0..cmd.per_user {
                rows.push(self.new_row(Some(owner.clone()))?);
            }
        }
        for _ in 0..cmd.unowned {
            rows.push(self.new_row(None)?);
        }

        let mut tx = self.pool.begin().await?;
        invitations::ensure_members(&mut tx, &owners).await?;
        invitations::insert_batch(&mut tx, &batch, count as i32).await?;
        let mut pending = rows;
        // A code collision (about 2^-74 per pair) only redraws that code.
        for _ in 0..MAX_ATTEMPTS {
            let collided = invitations::insert_invitations(&mut tx, &batch, &pending).await?;
            if collided.is_empty() {
                pending.clear();
                break;
            }
            pending.retain(|r| collided.contains(&r.id));
            for row in &mut pending {
                row.code = self.generate_code()?;
            }
        }
        if !pending.is_empty() {
            return Err(Error::Internal(anyhow::anyhow!("code collisions did not resolve")));
        }
        let minted = invitations::by_batch(&mut tx, batch.id).await?;
        let outcome = MintOutcome { invitations: minted, batch_id: Some(batch.id), count, dry_run: false };
        if !Self::remember(&mut tx, "Mint", &idem, &outcome).await? {
            tx.rollback().await?;
            return self.replay("Mint", &idem).await?.map(Answer::Replayed).ok_or_else(lost_record);
        }
        tx.commit().await?;
        tracing::info!(batch_id = %batch.id, count, label = %cmd.label, "minted invitations");
        Ok(Answer::Fresh(outcome))
    }

    fn generate_code(&self) -> Result<String, Error> {
        let code = self.codes.generate().map_err(|e| Error::Internal(anyhow::anyhow!("OS random source: {e}")))?;
        Ok(code.as_str().to_owned())
    }

    fn new_row(&self, inviter_id: Option<String>) -> Result<invitations::NewInvitation, Error> {
        Ok(invitations::NewInvitation { id: Uuid::now_v7(), code: self.generate_code()?, inviter_id })
    }

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
        let mut rows =
            invitations::page_for_owner(&mut conn, owner, query.state, after, i64::from(query.page_size) + 1).await?;
        let next_page_token = if rows.len() > query.page_size as usize {
            rows.truncate(query.page_size as usize);
            rows.last().map(|r| self.page_tokens.encode(&scope, r.id.as_bytes())).unwrap_or_default()
        } else {
            String::new()
        };
        let inviter_id = match owner {
            Some(user) => graph::inviter_of(&mut conn, user).await?,
            None => None,
        };
        Ok(ListPage { invitations: rows, next_page_token, inviter_id })
    }

    pub async fn check(&self, code: &InvitationCode) -> Result<CodeCheck, Error> {
        let mut conn = self.pool.acquire().await?;
        let Some(invitation) = invitations::by_code(&mut conn, code.as_str()).await? else {
            return Ok(CodeCheck { invitation: None, refusal: Some(Error::CodeNotFound) });
        };
        let refusal = invitation.unavailable_reason(OffsetDateTime::now_utc());
        Ok(CodeCheck { invitation: Some(invitation), refusal })
    }

    pub async fn redeem(
        &self,
        cmd: RedeemCommand,
        idem: Idempotency<'_, Redemption>,
    ) -> Result<Answer<Redemption>, Error> {
        if let Some(bytes) = self.replay("Redeem", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.pool.begin().await?;
            let result = redeem_in(&mut tx, &cmd).await;
            let redemption = match result {
                Ok(r) => r,
                Err(RedeemFailure::Sql(e)) if attempt < MAX_ATTEMPTS && retryable_redeem_error(&e) => {
                    tx.rollback().await?;
                    continue;
                }
                Err(RedeemFailure::Sql(e)) => return Err(e.into()),
                Err(RedeemFailure::Refused(e)) => return Err(e),
            };
            if !Self::remember(&mut tx, "Redeem", &idem, &redemption).await? {
                tx.rollback().await?;
                return self.replay("Redeem", &idem).await?.map(Answer::Replayed).ok_or_else(lost_record);
            }
            tx.commit().await?;
            return Ok(Answer::Fresh(redemption));
        }
    }

    pub async fn revoke(
        &self,
        cmd: RevokeCommand,
        idem: Idempotency<'_, RevokeOutcome>,
    ) -> Result<Answer<RevokeOutcome>, Error> {
        if let Some(bytes) = self.replay("Revoke", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let mut tx = self.pool.begin().await?;
        let outcome = match &cmd.target {
            RevokeTarget::Ids(ids) => {
                let found = invitations::by_ids(&mut tx, ids).await?;
                if found.len() != ids.len() {
                    return Err(Error::NotFound { what: "invitation", field: "invitation_ids" });
                }
                let changed = invitations::revoke_ids(&mut tx, ids, &cmd.reason, &cmd.revoked_by).await?;
                let invitations = invitations::by_ids(&mut tx, ids).await?;
                RevokeOutcome { invitations, revoked_count: changed as u32 }
            }
            RevokeTarget::UnspentOf(user) => {
                let invitations =
                    invitations::revoke_unspent_of(&mut tx, user.as_str(), &cmd.reason, &cmd.revoked_by).await?;
                let revoked_count = invitations.len() as u32;
                RevokeOutcome { invitations, revoked_count }
            }
        };
        if !Self::remember(&mut tx, "Revoke", &idem, &outcome).await? {
            tx.rollback().await?;
            return self.replay("Revoke", &idem).await?.map(Answer::Replayed).ok_or_else(lost_record);
        }
        tx.commit().await?;
        tracing::info!(revoked = outcome.revoked_count, "revoked invitations");
        Ok(Answer::Fresh(outcome))
    }

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

fn bad_page_token() -> Error {
    Error::invalid("page_token", "is not a page token of this query (forged, altered, or made for other filters)")
}

fn lost_record() -> Error {
    Error::Internal(anyhow::anyhow!("idempotency record vanished after a conflict"))
}

enum RedeemFailure {
    Refused(Error),
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for RedeemFailure {
    fn from(e: sqlx::Error) -> Self {
        RedeemFailure::Sql(e)
    }
}

/// Deadlocks between redeems joining trees, and the invitee's unique key when
/// two of its redeems raced (the retry then sees the winner).
fn retryable_redeem_error(e: &sqlx::Error) -> bool {
    store::is_retryable(e) || store::is_constraint_violation(e, "redemptions_invitee_id_key")
}

/// One redeem attempt inside a transaction. See docs/design.md ("Redeem") for
/// why the locks below rule out double spends and cycles.
async fn redeem_in(tx: &mut store::Tx<'_>, cmd: &RedeemCommand) -> Result<Redemption, RedeemFailure> {
    let invitee = cmd.invitee.as_str();
    let Some(invitation) = invitations::by_code(tx, cmd.code.as_str()).await? else {
        return Err(RedeemFailure::Refused(Error::CodeNotFound));
    };
    if invitation.inviter_id.as_deref() == Some(invitee) {
        return Err(RedeemFailure::Refused(Error::SelfInvite));
    }
    graph::lock_member(tx, invitee).await?;
    if let Some((joined_through, redeem_time)) = graph::joined_through(tx, invitee).await? {
        if joined_through == invitation.id {
            // A retry of a redeem that already succeeded: same answer.
            return Ok(Redemption { invitation, invitee_id: invitee.to_owned(), redeem_time });
        }
        return Err(RedeemFailure::Refused(Error::AlreadyInvited));
    }
    if let Some(reason) = invitation.unavailable_reason(OffsetDateTime::now_utc()) {
        return Err(RedeemFailure::Refused(reason));
    }
    if let Some(inviter) = invitation.inviter_id.as_deref() {
        if graph::has_invitees(tx, invitee).await? {
            graph::lock_tree_merges(tx).await?;
        }
        if graph::is_self_or_ancestor(tx, invitee, inviter).await? {
            return Err(RedeemFailure::Refused(Error::InviteCycle));
        }
    }
    let Some(spent) = invitations::take_use(tx, invitation.id, invitee).await? else {
        // Lost the race for the last use, or the database clock says expired.
        let now = invitations::by_id(tx, invitation.id).await?;
        let reason =
            now.and_then(|inv| inv.unavailable_reason(OffsetDateTime::now_utc())).unwrap_or(Error::AlreadyRedeemed);
        return Err(RedeemFailure::Refused(reason));
    };
    let redeem_time = graph::insert_redemption(tx, spent.id, spent.inviter_id.as_deref(), invitee).await?;
    tracing::info!(invitation_id = %spent.id, "redeemed invitation");
    Ok(Redemption { invitation: spent, invitee_id: invitee.to_owned(), redeem_time })
}
