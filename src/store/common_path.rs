//! The common path of Redeem, Reserve, CheckCode and ListForUser, each one
//! autocommit statement: one round trip to Postgres per call
//! (docs/design.md, "One round trip per call"). Redeem and Reserve call the
//! SQL functions of `migrations/0060_one_round_trip.sql` (Redeem's as
//! `migrations/0061_quotas_in_one_trip.sql` replaced it); CheckCode and
//! ListForUser are one query each. What these do not handle they hand back
//! as [`Status::General`] (nothing written), and the service runs its
//! general path, the statements of the other store modules.

use sqlx::postgres::PgRow;
use std::sync::LazyLock;

use sqlx::{FromRow, PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::attributes::Attributes;
use crate::domain::events::EventHead;
use crate::domain::{Invitation, Reservation, State};

/// What the database needs of the abuse checks for one request (the SQL
/// type `inv_screening`). Modes are `block`, `flag` or `off`.
pub struct Screening {
    /// Failed-attempt counter keys; empty when the limit is off or the
    /// request names nobody.
    pub attempt_keys: Vec<Vec<u8>>,
    pub attempt_window: OffsetDateTime,
    pub attempt_limit: i32,
    pub attempt_mode: &'static str,
    /// `block` or `flag` when the e-mail is at a disposable domain and
    /// that check is on.
    pub disposable: Option<&'static str>,
    /// The IP prefix under every configured secret; empty: no IP checks.
    pub ip_hashes: Vec<Vec<u8>>,
    pub ip_since: OffsetDateTime,
    pub ip_reuse: &'static str,
    pub same_ip: &'static str,
    /// What to record on the redemption, and under which secret.
    pub ip_record: Option<Vec<u8>>,
    pub ip_key_id: i32,
}

/// The `inv_screening` row built from parameters `$first..$first+10`.
pub(crate) fn screening_row(first: usize) -> String {
    let types =
        ["bytea[]", "timestamptz", "int", "text", "text", "bytea[]", "timestamptz", "text", "text", "bytea", "int"];
    let fields: Vec<String> = types.iter().enumerate().map(|(i, t)| format!("${}::{t}", first + i)).collect();
    format!("ROW({})::inv_screening", fields.join(", "))
}

pub(crate) fn bind_screening<'q>(query: PgQuery<'q>, s: &'q Screening) -> PgQuery<'q> {
    query
        .bind(&s.attempt_keys)
        .bind(s.attempt_window)
        .bind(s.attempt_limit)
        .bind(s.attempt_mode)
        .bind(s.disposable)
        .bind(&s.ip_hashes)
        .bind(s.ip_since)
        .bind(s.ip_reuse)
        .bind(s.same_ip)
        .bind(s.ip_record.as_deref())
        .bind(s.ip_key_id)
}

/// How a one-statement call ended.
pub enum Status<T> {
    Done(T),
    /// Refused, with the API's reason (`CODE_NOT_FOUND`, `REVOKED`, ...).
    Refused(String),
    /// Not a branch the statement handles; nothing was written.
    General,
}

fn status<T>(
    status: String,
    done: &str,
    value: impl FnOnce() -> Result<T, sqlx::Error>,
) -> Result<Status<T>, sqlx::Error> {
    if status == done {
        value().map(Status::Done)
    } else if status == "GENERAL" {
        Ok(Status::General)
    } else {
        Ok(Status::Refused(status))
    }
}

fn micros(d: Option<std::time::Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Whether the statement gave up because the call's deadline passed.
pub fn is_past_deadline(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}

/// Whether the error is the functions' hand-over after a write (SQLSTATE
/// IV000: the same invitee joined concurrently).
pub fn is_hand_over(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("IV000"))
}

/// A redeem the statement completed.
pub struct Redeemed {
    /// The invitation after the spend.
    pub spent: Invitation,
    pub redeem_time: OffsetDateTime,
    /// Abuse signals recorded on the redemption.
    pub flags: Vec<String>,
    /// Invitations the quota policies granted with it.
    pub granted: u64,
}

/// One quota grant prepared for the statement (SQL type `inv_grant`): as
/// many invitations as the policy could need, of which the statement mints
/// the first ones its counts call for (`inv_mint_grant`).
pub struct PreparedGrant {
    pub batch_id: Uuid,
    pub event: EventHead,
    /// In id order, which is the minted event's order.
    pub ids: Vec<Uuid>,
    pub hashes: Vec<Vec<u8>>,
    pub sealed: Vec<Vec<u8>>,
    /// The Grant message's encoded `codes` and `links` entries, one per
    /// invitation; empty unless events carry codes.
    pub code_fields: Vec<Vec<u8>>,
    pub link_fields: Vec<Vec<u8>>,
    /// Stored on every granted invitation (`Attributes::to_stored`).
    pub attributes: Vec<String>,
}

/// An unused grant: nothing made (no event id drawn, nothing encoded), as a
/// Redeem with the policy off passes it.
impl Default for PreparedGrant {
    fn default() -> Self {
        let event = EventHead { id: Uuid::nil(), time: OffsetDateTime::UNIX_EPOCH, head: Vec::new() };
        Self {
            batch_id: Uuid::nil(),
            event,
            ids: Vec::new(),
            hashes: Vec::new(),
            sealed: Vec::new(),
            code_fields: Vec::new(),
            link_fields: Vec::new(),
            attributes: Vec::new(),
        }
    }
}

/// The quota policies for one Redeem (SQL type `inv_quotas`); all zero and
/// empty when no policy grants anything.
#[derive(Default)]
pub struct QuotaGrants {
    pub welcome: i32,
    pub refill_to: i32,
    pub earn_secs: Option<f64>,
    pub key_id: i32,
    pub welcome_grant: PreparedGrant,
    pub refill_grant: PreparedGrant,
}

/// The `inv_quotas` row of parameters `$18..$41`.
const QUOTAS_ROW: &str = "ROW($18::int, $19::int, $20::float8, $21::int, \
     ROW($22::uuid, $23::uuid, $24::timestamptz, $25::bytea, $26::uuid[], $27::bytea[], $28::bytea[], $29::bytea[], \
         $30::bytea[], $31::text[])::inv_grant, \
     ROW($32::uuid, $33::uuid, $34::timestamptz, $35::bytea, $36::uuid[], $37::bytea[], $38::bytea[], $39::bytea[], \
         $40::bytea[], $41::text[])::inv_grant)::inv_quotas";

pub(crate) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

pub(crate) fn bind_grant<'q>(query: PgQuery<'q>, g: &'q PreparedGrant) -> PgQuery<'q> {
    query
        .bind(g.batch_id)
        .bind(g.event.id)
        .bind(g.event.time)
        .bind(&g.event.head)
        .bind(&g.ids)
        .bind(&g.hashes)
        .bind(&g.sealed)
        .bind(&g.code_fields)
        .bind(&g.link_fields)
        .bind(&g.attributes)
}

fn bind_quotas<'q>(query: PgQuery<'q>, q: &'q QuotaGrants) -> PgQuery<'q> {
    let query = query.bind(q.welcome).bind(q.refill_to).bind(q.earn_secs).bind(q.key_id);
    bind_grant(bind_grant(query, &q.welcome_grant), &q.refill_grant)
}

/// The invitation columns of the functions' `spent`, in `invitations::COLUMNS`
/// order (decoded by position).
const SPENT: &str = "(r.spent).id, (r.spent).code_ciphertext, (r.spent).code_key_id, (r.spent).inviter_id, \
     (r.spent).last_invitee_id, (r.spent).uses, (r.spent).max_uses, (r.spent).create_time, (r.spent).expire_time, \
     (r.spent).last_redeem_time, (r.spent).batch_id, (r.spent).label, (r.spent).note, (r.spent).minted_by, \
     (r.spent).revoke_time, (r.spent).revoke_reason, (r.spent).revoked_by, (r.spent).binding, \
     (r.spent).binding_digest, (r.spent).abuse_flags, (r.spent).attributes";

/// Redeem of a code by `invitee` (SQL `inv_redeem`).
pub async fn redeem(
    conn: &mut PgConnection,
    code_hashes: &[Vec<u8>],
    invitee: &str,
    event: &EventHead,
    screening: &Screening,
    quotas: &QuotaGrants,
    time_left: Option<std::time::Duration>,
) -> Result<Status<Redeemed>, sqlx::Error> {
    // Built once from constants: the screening and quota rows' casts.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {SPENT}, r.status, r.redeem_time, r.flags, r.granted \
             FROM inv_redeem($1, $2, $3, $4, $5, $6, {}, {}, $42) r",
            screening_row(7),
            QUOTAS_ROW,
        )
    });
    let query = sqlx::query(SQL.as_str())
        .bind(code_hashes)
        .bind(invitee)
        .bind(event.id)
        .bind(event.time)
        .bind(&event.head)
        .bind(crate::domain::events::redeemed_invitee_field(invitee));
    let query = bind_quotas(bind_screening(query, screening), quotas).bind(micros(time_left));
    let row = query.fetch_one(conn).await?;
    let n = super::invitations::COLUMN_COUNT;
    let outcome: String = row.try_get(n)?;
    status(outcome, "REDEEMED", || {
        Ok(Redeemed {
            spent: Invitation::from_row(&row)?,
            redeem_time: row.try_get(n + 1)?,
            flags: row.try_get(n + 2)?,
            granted: row.try_get::<i32, _>(n + 3)?.try_into().unwrap_or_default(),
        })
    })
}

/// A use reserved by the statement.
pub struct ReservedUse {
    pub reservation: Reservation,
    pub inviter_id: Option<String>,
    /// The invitation's (read in the same statement, after the function).
    pub attributes: Attributes,
}

/// Reserve of a use of a code (SQL `inv_reserve`).
pub async fn reserve(
    conn: &mut PgConnection,
    code_hashes: &[Vec<u8>],
    reservation_id: Uuid,
    ttl_micros: i64,
    event: &EventHead,
    screening: &Screening,
    time_left: Option<std::time::Duration>,
) -> Result<Status<ReservedUse>, sqlx::Error> {
    // Built once from constants: the screening row's casts.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT (r.reservation).id, (r.reservation).invitation_id, (r.reservation).status, \
                 (r.reservation).create_time, (r.reservation).expire_time, (r.reservation).end_time, \
                 (r.reservation).invitee_id, r.inviter_id, r.status AS outcome, \
                 (SELECT attributes FROM invitations i WHERE i.id = (r.reservation).invitation_id) AS attributes \
             FROM inv_reserve($1, $2, $3, $4, $5, $6, $7, {}, $19) r",
            screening_row(8)
        )
    });
    let query = sqlx::query(SQL.as_str())
        .bind(code_hashes)
        .bind(reservation_id)
        .bind(ttl_micros)
        .bind(event.id)
        .bind(event.time)
        .bind(&event.head)
        .bind(crate::domain::events::reservation_ref_field(reservation_id));
    let row = bind_screening(query, screening).bind(micros(time_left)).fetch_one(conn).await?;
    let outcome: String = row.try_get("outcome")?;
    status(outcome, "RESERVED_USE", || {
        Ok(ReservedUse {
            reservation: Reservation::from_row(&row)?,
            inviter_id: row.try_get("inviter_id")?,
            attributes: Attributes::from_stored(row.try_get("attributes")?),
        })
    })
}

/// What CheckCode reads in its one statement.
pub struct CodeState {
    pub invitation: Option<Invitation>,
    /// The most failures any attempt key has in the window (before this call).
    pub failures: i32,
    /// Uses held by live reservations.
    pub reserved_uses: i64,
    /// The owner's invite privileges (true for unowned invitations).
    pub inviter_enabled: bool,
}

/// Looks the code up with everything CheckCode answers, in one read-only
/// statement. (Counting an unknown code is the caller's second statement,
/// `abuse::add_failure`: in a data-modifying CTE here it made every
/// CheckCode a write statement and cost 4x the bare lookup.)
pub async fn check_code(
    conn: &mut PgConnection,
    code_hashes: &[Vec<u8>],
    attempt_keys: &[Vec<u8>],
    window_start: OffsetDateTime,
) -> Result<CodeState, sqlx::Error> {
    // Runtime SQL, built once: `COLUMNS` is decoded by position
    // (`Invitation`'s row), then the counts after it.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT inv.*, \
                 (SELECT coalesce(max(failures), 0) FROM attempt_counters \
                  WHERE key_hash = ANY($2) AND window_start = $3) AS failures, \
                 CASE WHEN inv.id IS NULL THEN 0 ELSE \
                     (SELECT count(*) FROM reservations r WHERE r.invitation_id = inv.id AND r.status = 'held' \
                      AND r.expire_time > clock_timestamp()) END AS reserved_uses, \
                 coalesce((SELECT invite_enabled FROM members WHERE user_id = inv.inviter_id), true) AS enabled \
             FROM (SELECT 1) one \
             LEFT JOIN (SELECT {} FROM invitations WHERE code_hash = ANY($1) LIMIT 1) inv ON true",
            super::invitations::COLUMNS
        )
    });
    let row = sqlx::query(SQL.as_str()).bind(code_hashes).bind(attempt_keys).bind(window_start).fetch_one(conn).await?;
    let n = super::invitations::COLUMN_COUNT;
    Ok(CodeState {
        invitation: invitation_if_any(&row)?,
        failures: row.try_get(n)?,
        reserved_uses: row.try_get(n + 1)?,
        inviter_enabled: row.try_get(n + 2)?,
    })
}

/// The invitation in the first `COLUMN_COUNT` columns, unless the row has none (a
/// left join that found nothing).
fn invitation_if_any(row: &PgRow) -> Result<Option<Invitation>, sqlx::Error> {
    let id: Option<Uuid> = row.try_get(0)?;
    id.map(|_| Invitation::from_row(row)).transpose()
}

/// A page of ListForUser with what it says about the owner.
pub struct OwnerPage {
    pub invitations: Vec<Invitation>,
    pub inviter_id: Option<String>,
    /// The earn policy's view (when asked for and the owner is known): the
    /// next tick, privileges, unspent invitations.
    pub earn: Option<(Option<OffsetDateTime>, bool, i64)>,
    /// Per invitation (same order): the kinds its invitees converted with.
    pub converted: Vec<Vec<String>>,
}

/// One page of an owner's invitations (or the unowned ones when `owner` is
/// None), newest first, strictly after `after`, with the owner's inviter
/// and, when `earn_interval_secs` is set, its earn status
/// (`quotas::earn_status`), and, when `with_conversions`, each invitation's
/// converted kinds (51 index probes a page: skipped while conversions are
/// off), in one statement.
pub async fn owner_page(
    conn: &mut PgConnection,
    owner: Option<&str>,
    state: Option<State>,
    after: Option<Uuid>,
    limit: i64,
    earn_interval_secs: Option<f64>,
    with_conversions: bool,
) -> Result<OwnerPage, sqlx::Error> {
    // Separate owner tests so both cases can use the (inviter_id, id) index.
    // next_tick is quotas::FIRST_TICK with the interval in $5. Runtime SQL,
    // built once per owner test: it, `OPEN`, `COLUMNS` and `STATE` are shared.
    fn page_sql(owner_test: &str) -> String {
        format!(
            "SELECT p.*, k.inviter_id AS owner_inviter, k.known, k.next_tick, k.enabled, k.unspent, \
                 CASE WHEN $6 AND p.id IS NOT NULL THEN (SELECT array_agg(DISTINCT c.kind ORDER BY c.kind) FROM conversions c \
                     WHERE c.invitation_id = p.id AND c.reward_state <> 'voided') END AS converted_kinds \
             FROM (SELECT m.inviter_id, m.user_id IS NOT NULL AS known, m.invite_enabled AS enabled, \
                       CASE WHEN $5::float8 IS NOT NULL THEN coalesce(m.earn_next_time, m.join_time \
                           + make_interval(secs => $5) \
                           * greatest(floor(extract(epoch FROM now() - m.join_time) / $5) + 1, 1)) END AS next_tick, \
                       CASE WHEN $5::float8 IS NOT NULL AND m.user_id IS NOT NULL THEN \
                           (SELECT count(*) FROM invitations i WHERE i.inviter_id = m.user_id AND {open}) END AS unspent \
                   FROM (SELECT 1) one LEFT JOIN members m ON m.user_id = $1) k \
             LEFT JOIN LATERAL ( \
                 SELECT {columns} FROM invitations \
                 WHERE {owner_test} \
                   AND ($2::uuid IS NULL OR id < $2) \
                   AND ($3::text IS NULL OR $3 = {state}) \
                 ORDER BY id DESC LIMIT $4) p ON true",
            open = super::waves::OPEN,
            columns = super::invitations::COLUMNS,
            state = super::invitations::STATE,
        )
    }
    static OWNED: LazyLock<String> = LazyLock::new(|| page_sql("inviter_id = $1"));
    static UNOWNED: LazyLock<String> = LazyLock::new(|| page_sql("inviter_id IS NULL AND $1::text IS NULL"));
    let sql = if owner.is_some() { &OWNED } else { &UNOWNED };
    let rows = sqlx::query(sql.as_str())
        .bind(owner)
        .bind(after)
        .bind(state.map(super::invitations::state_name))
        .bind(limit)
        .bind(earn_interval_secs)
        .bind(with_conversions)
        .fetch_all(conn)
        .await?;
    let mut page =
        OwnerPage { invitations: Vec::with_capacity(rows.len()), inviter_id: None, earn: None, converted: Vec::new() };
    if let Some(first) = rows.first() {
        page.inviter_id = first.try_get("owner_inviter")?;
        let known: bool = first.try_get("known")?;
        let unspent: Option<i64> = first.try_get("unspent")?;
        if let (true, Some(unspent)) = (known, unspent) {
            page.earn = Some((first.try_get("next_tick")?, first.try_get("enabled")?, unspent));
        }
    }
    for row in &rows {
        if let Some(invitation) = invitation_if_any(row)? {
            page.invitations.push(invitation);
            let kinds: Option<Vec<String>> = row.try_get("converted_kinds")?;
            page.converted.push(kinds.unwrap_or_default());
        }
    }
    Ok(page)
}
