//! The domain operations: mint, list, redeem, check, revoke, graph, members.
//! Each opens and commits its own transaction through `store`; none knows
//! about gRPC.
//! Idempotent operations store the caller's encoded answer in the same
//! transaction as the change (AIP-155), so a replay returns it byte for byte.
//! Every state change appends its events (`events`) to the outbox in that
//! same transaction (`store::outbox::append`), after the change itself.

pub mod abuse;
mod conversions;
mod expiry;
mod history;
mod invite_graph;
mod lifecycle;
mod list;
mod locking;
mod member_mint;
mod mint;
mod privacy;
mod privileges;
mod public_view;
mod quotas;
mod redeem;
mod registration;
pub mod rekey;
mod reparent;
mod request_ids;
mod reservation;
mod revoke;
mod rewards;
mod stats;
pub mod waitlist;
mod wave;

pub use abuse::{Attempt, sweep_abuse_records};
pub use conversions::{ConversionCommand, ConversionOutcome, ConversionSettings, Flagged};
pub use expiry::sweep_expired_invitations;
pub use history::{Change, DEFAULT_HISTORY_PAGE, HistoryPage, HistoryQuery, MAX_HISTORY_PAGE, maintain_history};
pub use invite_graph::{GraphQuery, GraphView, WalkQuery};
pub use lifecycle::{RestoreCommand, UpdateCommand};
pub use list::{CheckCommand, CodeCheck, ListPage, ListQuery};
pub use member_mint::{MemberLimits, MemberMintCommand};
pub use mint::{MintCommand, MintOutcome};
pub use privacy::{ERASED_REASON, EraseCommand, EraseOutcome};
pub use privileges::{PrivilegesCommand, PrivilegesOutcome};
pub use public_view::Placeholders;
pub use quotas::{Earn, MAX_GRANT, Quotas, grant_earned_invitations};
pub use redeem::{RedeemCommand, RedeemTarget, Redemption};
pub use registration::{RegisterCommand, RegisterOutcome};
pub use reparent::{ReparentCommand, ReparentOutcome};
pub use request_ids::sweep_request_ids;
pub use reservation::{ReservationSettings, ReserveCommand, Reserved, sweep_lapsed_reservations};
pub use revoke::{RevokeCommand, RevokeOutcome, RevokeTarget};
pub use rewards::grant_held_rewards;
pub use rewards::{MAX_REVIEW_REWARDS, ReviewRewardsCommand, ReviewRewardsOutcome, VoidCommand, VoidOutcome};
pub use stats::{ConversionStats, Period, Stats, StatsQuery, WaitlistStats, fold_counts};
pub use waitlist::{AdmitCommand, AdmitOutcome, Entry, EntryState, JoinCommand, JoinOutcome, Order};
pub use waitlist::{ReviewCommand, ReviewOutcome, WaitlistSettings};

use std::sync::Arc;

use sqlx::PgPool;

use crate::crypto::page_token::PageTokens;
use crate::crypto::vault::{Purpose, Vault};
use crate::domain::code::{CodeGenerator, InvitationCode};
use crate::domain::error::Error;
use crate::domain::events::CodeDisclosure;
pub use crate::domain::selector::{Selector, Wave};
use crate::domain::{Invitation, RequestId};
use crate::outbox::Waker;
use crate::store::{self, idempotency};
use crate::telemetry::DomainMetrics;

/// `read_statement!(self, read, conn => statement)`: one read statement
/// where `read` says (a standby's statement pool, or the primary's), as
/// `(answer, Source)`. A standby that fails it (a query cancelled by a
/// recovery conflict, a connection lost before the monitor noticed) is not
/// the caller's problem: it runs again on the primary. (A macro: an async
/// closure borrowing the call's locals is not `Send` for every lifetime.)
macro_rules! read_statement {
    ($svc:expr, $read:expr, $conn:ident => $statement:expr) => {{
        use $crate::store::replicas::Source;
        let svc = &$svc;
        let first = match svc.replicas.read_statements($read) {
            Some((standby, index)) => Some(match standby.get().await {
                Ok(mut $conn) => {
                    let result = $statement.await;
                    $conn.settled(result).map(|t| (t, Source::Standby(index)))
                }
                Err(e) => Err(e),
            }),
            None => None,
        };
        match first {
            Some(Ok(answer)) => answer,
            Some(Err(e)) if !$crate::service::standby_failed(&e) => return Err(e.into()),
            failed => {
                if let Some(Err(e)) = failed {
                    svc.replicas.count_fallback("standby_error");
                    tracing::info!(error = %e, "a standby failed a read; asked the primary");
                }
                let mut $conn = svc.statement_conn().await?;
                let result = $statement.await;
                ($conn.settled(result)?, Source::Primary)
            }
        }
    }};
}
pub(crate) use read_statement;

/// `read_pooled!(self, read, pool => read)`: a read of several statements
/// on a sqlx pool where `read` says. From a standby, NOT_FOUND (a row it
/// has not replayed yet) and a failure (as `read_statement!`) are asked
/// again of the primary.
macro_rules! read_pooled {
    ($svc:expr, $read:expr, $pool:ident => $run:expr) => {{
        use $crate::store::replicas::Source;
        let svc = &$svc;
        let ($pool, source) = svc.replicas.read_pool($read);
        let first = $run.await;
        match first {
            Err($crate::domain::error::Error::NotFound { .. }) if source != Source::Primary => {
                svc.replicas.count_fallback("not_found");
                let $pool = svc.replicas.primary();
                $run.await
            }
            Err($crate::domain::error::Error::Database(ref e))
                if source != Source::Primary && $crate::service::standby_failed(e) =>
            {
                svc.replicas.count_fallback("standby_error");
                tracing::info!(error = %e, "a standby failed a read; asked the primary");
                let $pool = svc.replicas.primary();
                $run.await
            }
            other => other,
        }
    }};
}
pub(crate) use read_pooled;

/// Draws of a new code after one collided (Mint, inside its transaction).
pub(crate) const MAX_CODE_DRAWS: usize = 5;

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

pub struct Invitations {
    pub(crate) pool: PgPool,
    pub(crate) codes: CodeGenerator,
    pub(crate) page_tokens: PageTokens,
    pub(crate) metrics: DomainMetrics,
    pub(crate) reservations: ReservationSettings,
    /// Codes and links in minted events (`--events-include-codes`).
    pub(crate) code_disclosure: Option<CodeDisclosure>,
    /// Told after every commit that appended events.
    pub(crate) waker: Waker,
    pub(crate) vault: Arc<Vault>,
    pub(crate) abuse: Arc<crate::domain::abuse::AbuseSettings>,
    /// Names hidden members in the public view of the graph.
    pub(crate) placeholders: Placeholders,
    /// Invitations granted by policy (welcome, refill, earn).
    pub(crate) quotas: Quotas,
    /// The longest a call may take (`--max-call-time`): a one-statement
    /// call past it does not commit.
    pub(crate) max_call_time: Option<std::time::Duration>,
    pub(crate) waitlist: WaitlistSettings,
    /// What members may create themselves (CreateMemberInvitation).
    pub(crate) member_limits: MemberLimits,
    pub(crate) conversions: Arc<ConversionSettings>,
    /// Where read-only calls read (`--database-read-url`).
    pub(crate) replicas: Arc<crate::store::replicas::Replicas>,
    /// Connections for the one-statement common path (no ping after each
    /// call).
    pub(crate) statements: crate::store::statements::StatementPool,
}

impl Invitations {
    pub fn new(
        pool: PgPool,
        statements: crate::store::statements::StatementPool,
        codes: CodeGenerator,
        page_tokens: PageTokens,
        vault: Arc<Vault>,
    ) -> Self {
        Self {
            codes,
            page_tokens,
            metrics: DomainMetrics::disabled(),
            reservations: ReservationSettings::default(),
            code_disclosure: None,
            waker: Waker::default(),
            vault,
            abuse: Arc::default(),
            placeholders: Placeholders::unkeyed(),
            quotas: Quotas::default(),
            max_call_time: None,
            waitlist: WaitlistSettings::default(),
            member_limits: MemberLimits::default(),
            conversions: Arc::default(),
            replicas: crate::store::replicas::Replicas::primary_only(pool.clone()),
            statements,
            pool,
        }
    }

    /// A primary connection for one common-path statement.
    pub(crate) async fn statement_conn(&self) -> Result<crate::store::statements::Lease, sqlx::Error> {
        self.statements.get().await
    }

    pub fn with_replicas(self, replicas: Arc<crate::store::replicas::Replicas>) -> Self {
        Self { replicas, ..self }
    }

    pub fn with_max_call_time(self, max_call_time: std::time::Duration) -> Self {
        Self { max_call_time: Some(max_call_time), ..self }
    }

    /// How long a call may still take: the caller's deadline (its
    /// `grpc-timeout`) or the server's cap, whichever is shorter.
    pub(crate) fn time_left(&self, requested: Option<std::time::Duration>) -> Option<std::time::Duration> {
        match (requested, self.max_call_time) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Names hidden members in the public view by keyed placeholders (the
    /// default names them all just `hidden`).
    pub fn with_placeholders(self, placeholders: Placeholders) -> Self {
        Self { placeholders, ..self }
    }

    /// Wakes relays through `waker` after commits that appended events.
    pub fn with_waker(self, waker: Waker) -> Self {
        Self { waker, ..self }
    }

    /// Puts codes and links into minted events (off unless the operator asks).
    pub fn with_code_disclosure(self, code_disclosure: Option<CodeDisclosure>) -> Self {
        Self { code_disclosure, ..self }
    }

    /// Counts what commits (minted, redeemed) on these instruments.
    pub fn with_metrics(self, metrics: DomainMetrics) -> Self {
        Self { metrics, ..self }
    }

    pub fn with_reservations(self, reservations: ReservationSettings) -> Self {
        Self { reservations, ..self }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Looks up a stored answer for the request id; refuses a reused id.
    pub(crate) async fn replay<T>(&self, method: &str, idem: &Idempotency<'_, T>) -> Result<Option<Vec<u8>>, Error> {
        let Some(request_id) = &idem.request_id else { return Ok(None) };
        let mut conn = self.pool.acquire().await?;
        match idempotency::find(&mut conn, method, request_id.as_str()).await? {
            Some(record) if record.request_hash == idem.request_hash => match record.response_key_id {
                None => Ok(Some(record.response)),
                Some(key_id) => self
                    .vault
                    .open(key_id, &answer_aad(method, request_id.as_str()), &record.response)
                    .map(Some)
                    .ok_or_else(|| Error::Internal(anyhow::anyhow!("stored answer sealed under an unknown secret"))),
            },
            Some(_) => Err(Error::RequestIdReused),
            None => Ok(None),
        }
    }

    /// Stores the answer (when there is a request id) and commits. If a
    /// concurrent twin with the same request id committed first, rolls back
    /// this transaction's work and replays the twin's answer instead.
    pub(crate) async fn commit_answer<T>(
        &self,
        mut tx: store::Tx<'_>,
        method: &str,
        idem: &Idempotency<'_, T>,
        answer: T,
    ) -> Result<Answer<T>, Error> {
        if let Some(request_id) = &idem.request_id {
            let bytes = (idem.encode)(&answer);
            let sealed = self.vault.seal(&answer_aad(method, request_id.as_str()), &bytes).map_err(internal)?;
            let stored = idempotency::insert(
                &mut tx,
                method,
                request_id.as_str(),
                &idem.request_hash,
                &sealed.bytes,
                sealed.key_id,
            )
            .await?;
            if !stored {
                tx.rollback().await?;
                return self.replay(method, idem).await?.map(Answer::Replayed).ok_or_else(lost_record);
            }
        }
        tx.commit().await?;
        self.waker.committed();
        Ok(Answer::Fresh(answer))
    }

    /// The lookup hashes of a code, one per configured secret.
    pub(crate) fn code_hashes(&self, code: &InvitationCode) -> Vec<Vec<u8>> {
        self.vault.hashes(Purpose::Code, code.as_str().as_bytes())
    }

    /// Opens the sealed codes of invitations read from the store. A code
    /// sealed under a secret that is no longer configured stays empty (and
    /// is logged): the rest of the invitation is still worth showing.
    pub(crate) fn reveal(&self, mut invitations: Vec<Invitation>) -> Vec<Invitation> {
        for inv in &mut invitations {
            self.reveal_one(inv);
        }
        invitations
    }

    pub(crate) fn reveal_one(&self, inv: &mut Invitation) {
        let (Some(key_id), Some(sealed)) = (inv.code_key_id, inv.code_ciphertext.as_deref()) else { return };
        match self.vault.open(key_id, inv.id.as_bytes(), sealed).and_then(|b| String::from_utf8(b).ok()) {
            Some(code) => inv.code = code,
            None => {
                tracing::warn!(invitation_id = %inv.id, key_id, "code sealed under a secret that is not configured")
            }
        }
    }
}

/// Associated data of a stored answer: it opens only for its own key.
/// A standby's failure worth asking the primary about: replay cancelled
/// the query (40001, 40P01: `max_standby_streaming_delay`) or the standby
/// is away; anything else (a fault in the statement) would fail there too.
pub(crate) fn standby_failed(e: &sqlx::Error) -> bool {
    use crate::domain::error::{DbClass, classify};
    classify(e) != DbClass::Internal
}

fn answer_aad(method: &str, request_id: &str) -> Vec<u8> {
    [method.as_bytes(), b"\0", request_id.as_bytes()].concat()
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("{e}"))
}

pub(crate) fn bad_page_token() -> Error {
    Error::invalid("page_token", "is not a page token of this query (forged, altered, or made for other filters)")
}

pub(crate) fn lost_record() -> Error {
    Error::Internal(anyhow::anyhow!("idempotency record vanished after a conflict"))
}
