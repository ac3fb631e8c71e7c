//! SQL for the waitlist (migrations/0062_waitlist.sql): joining (one call
//! of `inv_waitlist_join`), reading an entry with its position (one
//! statement), reviews, and the admission's lock-and-mark statements. The
//! position arithmetic and the binding of an admitted invitation to its
//! applicant live in the migration; the admission's mint goes through the
//! one insert path (`service::mint`).

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use super::common_path::{Screening, bind_screening, screening_row};
use crate::domain::events::Event;

/// One entry as the API shows it: the row, its position and (admitted)
/// its invitation's parts. Decoded by name.
#[derive(Debug, Clone, FromRow)]
pub struct EntryRow {
    pub id: Uuid,
    pub applicant_id: String,
    pub referral_handle: String,
    pub state: String,
    pub referrals: i32,
    pub redeemed_referrals: i32,
    pub bump: i64,
    pub reason: String,
    pub join_time: OffsetDateTime,
    pub abuse_flags: Vec<String>,
    pub review_time: Option<OffsetDateTime>,
    pub reviewed_by: Option<String>,
    pub review_reason: Option<String>,
    pub admit_time: Option<OffsetDateTime>,
    pub invitation_id: Option<Uuid>,
    pub redeem_time: Option<OffsetDateTime>,
    /// In the line: 1-based; else None.
    pub position: Option<i64>,
    pub code_ciphertext: Option<Vec<u8>>,
    pub code_key_id: Option<i32>,
    pub inviter_id: Option<String>,
    pub expire_time: Option<OffsetDateTime>,
}

/// The columns of [`EntryRow`] from entry `e` (a row of waitlist_entries)
/// with its position `pos`, and invitation `i` (left-joined).
fn entry_columns(e: &str, pos: &str) -> String {
    [
        "id",
        "applicant_id",
        "referral_handle",
        "state",
        "referrals",
        "redeemed_referrals",
        "bump",
        "reason",
        "join_time",
        "abuse_flags",
        "review_time",
        "reviewed_by",
        "review_reason",
        "admit_time",
        "invitation_id",
        "redeem_time",
    ]
    .iter()
    .map(|c| format!("({e}).{c}"))
    .chain([
        format!("{pos} AS position"),
        "i.code_ciphertext".into(),
        "i.code_key_id".into(),
        "i.inviter_id".into(),
        "i.expire_time".into(),
    ])
    .collect::<Vec<_>>()
    .join(", ")
}

/// What a join asks for, besides the screening.
pub struct Join<'a> {
    pub entry_id: Uuid,
    pub applicant_id: &'a str,
    pub referral_handle: &'a str,
    pub referrer: Option<&'a str>,
    pub reason: &'a str,
    /// Places per referral, the cap, places per redeemed referral.
    pub places: i64,
    pub cap: i64,
    pub redeem_places: i64,
    /// A rejected entry may join again if it was rejected before this.
    pub reapply_before: OffsetDateTime,
    /// The joined event, appended only when the applicant is new.
    pub event: &'a Event,
}

/// How a join ended: `JOINED`, `EXISTING`, or a refusal reason (then the
/// entry is the existing one for `REAPPLY_TOO_SOON`, else absent).
pub struct Joined {
    pub status: String,
    pub entry: Option<EntryRow>,
}

/// The applicant's unique key, when two joins of one applicant raced (run
/// again, the join finds the winner's entry).
pub fn is_join_race(e: &sqlx::Error) -> bool {
    super::is_constraint_violation(e, "waitlist_entries_applicant_id_key")
}

/// JoinWaitlist in one statement.
pub async fn join(conn: &mut PgConnection, j: &Join<'_>, s: &Screening) -> Result<Joined, sqlx::Error> {
    // Runtime SQL: the screening row's casts and the entry's columns are
    // shared with Redeem and the other entry reads.
    let sql = format!(
        "WITH j AS (SELECT * FROM inv_waitlist_join($1, $2, $3, $4, $5, $6, $7, $8, $9, {}, $21, $22, $23)) \
         SELECT j.status, {} FROM j LEFT JOIN invitations i ON i.id = (j.entry).invitation_id",
        screening_row(10),
        entry_columns("j.entry", "j.place"),
    );
    let query = sqlx::query(&sql)
        .bind(j.entry_id)
        .bind(j.applicant_id)
        .bind(j.referral_handle)
        .bind(j.referrer)
        .bind(j.reason)
        .bind(j.places)
        .bind(j.cap)
        .bind(j.redeem_places)
        .bind(j.reapply_before);
    let row = bind_screening(query, s)
        .bind(j.event.id)
        .bind(j.event.partition)
        .bind(j.event.payload.as_slice())
        .fetch_one(conn)
        .await?;
    let status: String = sqlx::Row::try_get(&row, "status")?;
    let id: Option<Uuid> = sqlx::Row::try_get(&row, "id")?;
    let entry = match id {
        Some(_) => Some(EntryRow::from_row(&row)?),
        None => None,
    };
    Ok(Joined { status, entry })
}

/// Which entry to read.
pub enum EntryKey<'a> {
    Id(Uuid),
    Applicant(&'a str),
}

/// One entry with its position, in one statement.
pub async fn get(conn: &mut PgConnection, key: &EntryKey<'_>) -> Result<Option<EntryRow>, sqlx::Error> {
    let filter = match key {
        EntryKey::Id(_) => "e.id = $1::uuid",
        EntryKey::Applicant(_) => "e.applicant_id = $1",
    };
    // Runtime SQL: the entry's columns are shared (`entry_columns`).
    let sql = format!(
        "SELECT {} FROM waitlist_entries e LEFT JOIN invitations i ON i.id = e.invitation_id WHERE {filter}",
        entry_columns("e", "inv_waitlist_position(e)")
    );
    let query = sqlx::query_as(&sql);
    let query = match key {
        EntryKey::Id(id) => query.bind(id.to_string()),
        EntryKey::Applicant(a) => query.bind(a.to_string()),
    };
    query.fetch_optional(conn).await
}

/// Entries by id, with positions, in no particular order.
pub async fn get_many(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<EntryRow>, sqlx::Error> {
    // Runtime SQL: the entry's columns are shared (`entry_columns`).
    let sql = format!(
        "SELECT {} FROM waitlist_entries e LEFT JOIN invitations i ON i.id = e.invitation_id WHERE e.id = ANY($1)",
        entry_columns("e", "inv_waitlist_position(e)")
    );
    sqlx::query_as(&sql).bind(ids).fetch_all(conn).await
}

/// Locks the named entries (in id order, so concurrent reviews do not
/// deadlock); returns each found one's id and state.
pub async fn lock_for_review(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let rows = sqlx::query!("SELECT id, state FROM waitlist_entries WHERE id = ANY($1) ORDER BY id FOR UPDATE", ids)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.state)).collect())
}

/// Records a decision on the entries given (the caller checked they may
/// take it); returns each changed entry's id and applicant.
pub async fn review(
    conn: &mut PgConnection,
    ids: &[Uuid],
    state: &str,
    reason: &str,
    reviewed_by: &str,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        "UPDATE waitlist_entries SET state = $2, review_time = now(), review_reason = $3, reviewed_by = $4 \
         WHERE id = ANY($1) AND state <> $2 RETURNING id, applicant_id",
        ids,
        state,
        reason,
        reviewed_by,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.applicant_id)).collect())
}

/// How AdmitFromWaitlist picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Position,
    Oldest,
    Random,
}

/// An entry picked for admission, with who would invite it: its referrer
/// member, or its referrer entry's applicant (a member only if it joined).
#[derive(Debug, Clone, FromRow)]
pub struct Candidate {
    pub id: Uuid,
    pub applicant_id: String,
    pub referrer: Option<String>,
    /// Where it stands in the line (order by position: (score, seq)).
    pub score: i64,
    pub seq: i64,
}

/// Up to `n` eligible entries (in `states`) in `order`, passing over
/// applicants who became members meanwhile (through another invitation:
/// an invitation bound to them would be wasted). With `lock`, each
/// is locked and entries another admitter holds are skipped, so two
/// admitters never pick the same entry (a locked entry that the other
/// admits is not in the line when its lock is released).
pub async fn pick(
    conn: &mut PgConnection,
    states: &[&str],
    order: Order,
    n: i64,
    lock: bool,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let order_by = match order {
        Order::Position => "e.score, e.seq",
        Order::Oldest => "e.seq",
        Order::Random => "random()",
    };
    let lock = if lock { "FOR UPDATE OF e SKIP LOCKED" } else { "" };
    // Every eligible state is in the line, so the partial index serves it.
    // Runtime SQL: the order and the lock are chosen per call.
    sqlx::query_as(&format!(
        "SELECT e.id, e.applicant_id, coalesce(e.referrer_member_id, r.applicant_id) AS referrer, e.score, e.seq \
         FROM waitlist_entries e LEFT JOIN waitlist_entries r ON r.id = e.referrer_entry_id \
         WHERE e.state = ANY($1) AND e.state IN ('waiting', 'approved') \
           AND NOT EXISTS (SELECT 1 FROM members m WHERE m.user_id = e.applicant_id) \
         ORDER BY {order_by} LIMIT $2 {lock}"
    ))
    .bind(states)
    .bind(n)
    .fetch_all(conn)
    .await
}

/// The entries `pick` passed over because their applicant became a member,
/// taken out of the line (rejected, reason `reason`, reviewed by
/// `reviewed_by`): those ahead of `last` in `order` (every one when `last`
/// is None: the pick reached the end of the line), at most 1,000 a call.
/// The range is what the pick has just read, so this reads no more. Not
/// for the random order (it has no "ahead"). Returns id and applicant.
pub async fn close_members_ahead(
    conn: &mut PgConnection,
    states: &[&str],
    order: Order,
    last: Option<(i64, i64)>,
    reason: &str,
    reviewed_by: &str,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let (ahead, order_by) = match (order, last) {
        (Order::Random, _) => return Ok(Vec::new()),
        (Order::Position, Some(_)) => ("(o.score, o.seq) < ($5, $6)", "o.score, o.seq"),
        (Order::Oldest, Some(_)) => ("o.seq < $6", "o.seq"),
        (Order::Position, None) => ("true", "o.score, o.seq"),
        (Order::Oldest, None) => ("true", "o.seq"),
    };
    let (score, seq) = last.unwrap_or_default();
    // Runtime SQL: the range and order follow the pick's.
    let rows: Vec<(Uuid, String)> = sqlx::query_as(&format!(
        "UPDATE waitlist_entries e SET state = 'rejected', review_time = now(), review_reason = $2, \
             reviewed_by = $3 \
         FROM (SELECT o.id FROM waitlist_entries o \
               WHERE o.state = ANY($1) AND o.state IN ('waiting', 'approved') AND {ahead} \
                 AND EXISTS (SELECT 1 FROM members m WHERE m.user_id = o.applicant_id) \
               ORDER BY {order_by} LIMIT $4 FOR UPDATE SKIP LOCKED) s \
         WHERE e.id = s.id RETURNING e.id, e.applicant_id"
    ))
    .bind(states)
    .bind(reason)
    .bind(reviewed_by)
    .bind(1000_i64)
    .bind(score)
    .bind(seq)
    .fetch_all(conn)
    .await?;
    Ok(rows)
}

/// Of these users, the members whose invite privileges are on.
pub async fn enabled_members(conn: &mut PgConnection, user_ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!("SELECT user_id FROM members WHERE user_id = ANY($1) AND invite_enabled", user_ids)
        .fetch_all(conn)
        .await
}

/// Marks entries admitted with their invitations.
pub async fn mark_admitted(conn: &mut PgConnection, entries: &[Uuid], invitations: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE waitlist_entries e SET state = 'admitted', admit_time = now(), invitation_id = t.invitation_id \
         FROM unnest($1::uuid[], $2::uuid[]) AS t(id, invitation_id) WHERE e.id = t.id",
        entries,
        invitations,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An admitted entry's invitation was redeemed (by its applicant: the
/// invitation is applicant-bound, so only the general Redeem path gets
/// here): the entry records when, and its referrer entry moves up by the
/// entry's `redeem_bump`, within the referrer's cap. One statement.
pub async fn record_redemption(
    conn: &mut PgConnection,
    invitation_id: Uuid,
    redeem_time: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH e AS (UPDATE waitlist_entries SET redeem_time = $2 WHERE invitation_id = $1 \
             RETURNING referrer_entry_id, redeem_bump) \
         UPDATE waitlist_entries r \
         SET redeemed_referrals = r.redeemed_referrals + 1, \
             bump = least(r.bump + e.redeem_bump, greatest(r.bump, r.bump_cap)) \
         FROM e WHERE r.id = e.referrer_entry_id",
        invitation_id,
        redeem_time,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The counters of the line's buckets, folded with the others.
pub const LINE_COUNTS: super::Counters = super::Counters {
    counts: "waitlist_line_counts",
    deltas: "waitlist_line_deltas",
    key: "bucket",
    columns: &["entries"],
};

/// The waitlist's section of GetStats (in the caller's snapshot).
#[derive(Debug, Clone, Default, FromRow)]
pub struct WaitlistCounts {
    pub waiting: i64,
    pub joined: i64,
    pub admitted: i64,
    pub reviewed: i64,
    pub approved: i64,
    pub median_wait_seconds: Option<f64>,
    pub admitted_redeemed: i64,
}

/// The line from its bucket counters; the window's joins, reviews and
/// admissions from index ranges.
pub async fn counts(
    conn: &mut PgConnection,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> Result<WaitlistCounts, sqlx::Error> {
    sqlx::query_as!(
        WaitlistCounts,
        r#"SELECT (SELECT coalesce(sum(entries), 0) FROM waitlist_line_counts)::bigint
              + (SELECT coalesce(sum(entries), 0) FROM waitlist_line_deltas)::bigint AS "waiting!",
                (SELECT count(*) FROM waitlist_entries WHERE join_time >= $1 AND join_time < $2) AS "joined!",
                a.admitted AS "admitted!", a.median_wait_seconds, a.admitted_redeemed AS "admitted_redeemed!",
                r.reviewed AS "reviewed!", r.approved AS "approved!"
           FROM (SELECT count(*) AS admitted, count(redeem_time) AS admitted_redeemed,
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM admit_time - join_time))
                            AS median_wait_seconds
                 FROM waitlist_entries WHERE admit_time >= $1 AND admit_time < $2) a,
                (SELECT count(*) AS reviewed, count(*) FILTER (WHERE state <> 'rejected') AS approved
                 FROM waitlist_entries WHERE review_time >= $1 AND review_time < $2) r"#,
        start,
        end,
    )
    .fetch_one(conn)
    .await
}

/// Joined and admitted per UTC day with any, by day.
pub async fn per_day(
    conn: &mut PgConnection,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> Result<Vec<(OffsetDateTime, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT day AS "day!", sum(joined)::bigint AS "joined!", sum(admitted)::bigint AS "admitted!" FROM (
             SELECT date_trunc('day', join_time, 'UTC') AS day, 1 AS joined, 0 AS admitted
             FROM waitlist_entries WHERE join_time >= $1 AND join_time < $2
             UNION ALL
             SELECT date_trunc('day', admit_time, 'UTC'), 0, 1
             FROM waitlist_entries WHERE admit_time >= $1 AND admit_time < $2) t
           GROUP BY day ORDER BY day"#,
        start,
        end,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.day, r.joined, r.admitted)).collect())
}

/// Referrers by applicants who joined through them in the window.
pub async fn top_referrers(
    conn: &mut PgConnection,
    start: OffsetDateTime,
    end: OffsetDateTime,
    limit: i64,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT coalesce(e.referrer_member_id, r.applicant_id) AS "referrer!", count(*) AS "referrals!"
           FROM waitlist_entries e LEFT JOIN waitlist_entries r ON r.id = e.referrer_entry_id
           WHERE e.join_time >= $1 AND e.join_time < $2
             AND (e.referrer_member_id IS NOT NULL OR e.referrer_entry_id IS NOT NULL)
           GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $3"#,
        start,
        end,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.referrer, r.referrals)).collect())
}
