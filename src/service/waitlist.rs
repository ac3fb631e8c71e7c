//! The waitlist (docs/design.md, "Waitlist"): joining (one statement,
//! screened like Redeem), reading an entry (one statement), batch review,
//! and admission in waves (one transaction that mints through the one
//! insert path). What the database enforces by itself (positions, bumps,
//! the applicant binding on every Redeem path) is in
//! migrations/0062_waitlist.sql; none of this knows about gRPC.

use std::collections::HashMap;

use rand::TryRngCore;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::email::{Binding, BindingKind, Email};
use crate::domain::error::Error;
use crate::domain::events::{Admitted, Event};
use crate::domain::history::{Entry as HistoryEntry, Operation};
use crate::domain::{Invitation, UserId};
use crate::service::abuse::Attempt;
use crate::service::mint::Recipients;
use crate::store::history;
use crate::store::invitations::{self, BatchAttributes};
use crate::store::replicas::ReadFrom;
use crate::store::waitlist::{self as wl, EntryKey, EntryRow};
use crate::store::{self, outbox};

use super::{Invitations, internal, read_pooled};

pub use crate::store::waitlist::Order;

/// Most entries one review or admission names.
pub const MAX_REVIEW: usize = 1_000;
pub const MAX_ADMIT: u32 = 10_000;

/// The waitlist's settings (`--waitlist-*`).
#[derive(Debug, Clone, Copy)]
pub struct WaitlistSettings {
    /// Only approved entries are admitted.
    pub review_required: bool,
    /// Places an entry moves up per applicant joining through its handle.
    pub places_per_referral: u32,
    /// ...and per one of those admitted who redeems.
    pub places_per_redeemed: u32,
    /// The most places an entry moves up in all.
    pub max_bump: u32,
    /// How long a rejected applicant waits before joining again.
    pub reapply_after: time::Duration,
}

impl Default for WaitlistSettings {
    fn default() -> Self {
        Self {
            review_required: false,
            places_per_referral: 10,
            places_per_redeemed: 50,
            max_bump: 1_000,
            reapply_after: time::Duration::days(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Waiting,
    Approved,
    Rejected,
    Admitted,
}

impl EntryState {
    fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "waiting" => Ok(Self::Waiting),
            "approved" => Ok(Self::Approved),
            "rejected" => Ok(Self::Rejected),
            "admitted" => Ok(Self::Admitted),
            other => Err(internal(format!("unknown waitlist state {other:?}"))),
        }
    }
}

/// An entry as the API shows it; the invitation's code revealed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub row: EntryRow,
    pub state: EntryState,
    /// Admitted: the code in canonical form (empty if it cannot be opened).
    pub code: String,
    /// Rejected: when the applicant may join again.
    pub reapply_time: Option<OffsetDateTime>,
}

pub struct JoinCommand {
    pub applicant: UserId,
    /// A referral handle or a member's user id.
    pub referrer: Option<String>,
    pub reason: String,
    pub email: Option<Email>,
    pub attempt: Attempt,
}

pub struct JoinOutcome {
    pub entry: Entry,
    pub created: bool,
}

pub struct ReviewCommand {
    pub entries: Vec<Uuid>,
    pub approve: bool,
    pub reason: String,
    pub reviewed_by: String,
}

pub struct ReviewOutcome {
    pub entries: Vec<Entry>,
    pub changed: u32,
}

pub struct AdmitCommand {
    pub count: u32,
    pub order: Order,
    pub ttl: Option<time::Duration>,
    pub label: String,
    pub note: String,
    pub admitted_by: String,
    pub dry_run: bool,
}

pub struct AdmitOutcome {
    pub entries: Vec<Entry>,
    pub batch_id: Option<Uuid>,
    pub exhausted: bool,
    pub dry_run: bool,
}

/// A fresh referral handle: `r` and 16 symbols of Crockford base32 (80 bits).
fn referral_handle() -> Result<String, Error> {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| internal(format!("OS random source: {e}")))?;
    Ok(std::iter::once('r').chain(bytes.iter().map(|b| ALPHABET[usize::from(b % 32)] as char)).collect())
}

/// Why admission takes an entry out of the line, and who did (as a review).
const BECAME_MEMBER: &str = "became a member";
const ADMISSION: &str = "admission";

impl Invitations {
    pub fn with_waitlist(self, waitlist: WaitlistSettings) -> Self {
        Self { waitlist, ..self }
    }

    fn entry(&self, row: EntryRow) -> Result<Entry, Error> {
        let state = EntryState::parse(&row.state)?;
        let code = match (row.invitation_id, row.code_key_id, row.code_ciphertext.as_deref()) {
            (Some(id), Some(key_id), Some(sealed)) => self
                .vault
                .open(key_id, id.as_bytes(), sealed)
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_else(|| {
                    tracing::warn!(invitation_id = %id, key_id, "code sealed under a secret that is not configured");
                    String::new()
                }),
            _ => String::new(),
        };
        let reapply_time = match state {
            EntryState::Rejected => row.review_time.map(|t| t + self.waitlist.reapply_after),
            _ => None,
        };
        Ok(Entry { row, state, code, reapply_time })
    }

    /// JoinWaitlist in one statement.
    #[tracing::instrument(name = "db.join_waitlist", skip_all, fields(db.system = "postgresql"))]
    pub async fn join_waitlist(&self, cmd: JoinCommand) -> Result<JoinOutcome, Error> {
        let mut attempt = cmd.attempt.clone();
        // The applicant's own counter, like an invitee's on Redeem.
        attempt.invitee = Some(cmd.applicant.clone());
        let screening = self.screening(&attempt, cmd.email.as_ref());
        let entry_id = Uuid::now_v7();
        let handle = referral_handle()?;
        let applicant = cmd.applicant.as_str();
        let event = Event::waitlist_joined(entry_id, applicant, cmd.referrer.as_deref());
        let w = self.waitlist;
        let join = wl::Join {
            entry_id,
            applicant_id: applicant,
            referral_handle: &handle,
            referrer: cmd.referrer.as_deref(),
            reason: &cmd.reason,
            places: i64::from(w.places_per_referral),
            cap: i64::from(w.max_bump),
            redeem_places: i64::from(w.places_per_redeemed),
            reapply_before: OffsetDateTime::now_utc() - w.reapply_after,
            event: &event,
        };
        for _ in 0..store::MAX_ATTEMPTS {
            let mut conn = self.pool.acquire().await?;
            let joined = match wl::join(&mut conn, &join, &screening).await {
                Ok(joined) => joined,
                // The same applicant joining at the same moment: the retry
                // finds its entry.
                Err(e) if wl::is_join_race(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let entry = joined.entry.map(|row| self.entry(row)).transpose()?;
            return match (joined.status.as_str(), entry) {
                ("JOINED", Some(entry)) => {
                    self.waker.committed();
                    tracing::info!(entry_id = %entry.row.id, flags = entry.row.abuse_flags.len(), "joined the waitlist");
                    Ok(JoinOutcome { entry, created: true })
                }
                ("EXISTING", Some(entry)) => Ok(JoinOutcome { entry, created: false }),
                ("GENERAL", _) => continue,
                ("REAPPLY_TOO_SOON", Some(entry)) => {
                    let now = OffsetDateTime::now_utc();
                    let retry_after = entry.reapply_time.map_or(time::Duration::SECOND, |t| t - now);
                    Err(Error::ReapplyTooSoon { retry_after: retry_after.max(time::Duration::SECOND) })
                }
                ("ALREADY_MEMBER", _) => Err(Error::AlreadyMember),
                ("REFERRER_NOT_FOUND", _) => Err(Error::NotFound { what: "referrer", field: "referrer" }),
                (reason, _) => Err(self.refusal(reason)),
            };
        }
        Err(internal("joining the waitlist kept racing a concurrent change of the entry"))
    }

    /// GetWaitlistEntry in one statement.
    #[tracing::instrument(name = "db.get_waitlist_entry", skip_all, fields(db.system = "postgresql"))]
    pub async fn waitlist_entry(&self, key: EntryKey<'_>, read: ReadFrom) -> Result<Entry, Error> {
        let field = match key {
            EntryKey::Id(_) => "entry_id",
            EntryKey::Applicant(_) => "applicant_id",
        };
        // As CheckCode: never "not found" from a standby (an entry that
        // joined a moment ago): `read_pooled` asks the primary.
        let row = read_pooled!(self, read, pool => async {
            let row = wl::get(&mut *pool.acquire().await?, &key).await?;
            row.ok_or(Error::NotFound { what: "waitlist entry", field })
        })?;
        self.entry(row)
    }

    /// ReviewWaitlistEntries: all named entries or none.
    #[tracing::instrument(name = "db.review_waitlist", skip_all, fields(db.system = "postgresql"))]
    pub async fn review_waitlist(&self, cmd: ReviewCommand) -> Result<ReviewOutcome, Error> {
        let mut tx = self.pool.begin().await?;
        let mut sorted = cmd.entries.clone();
        sorted.sort();
        let found: HashMap<Uuid, String> = wl::lock_for_review(&mut tx, &sorted).await?.into_iter().collect();
        for id in &cmd.entries {
            match found.get(id).map(String::as_str) {
                None => return Err(Error::NotFound { what: "waitlist entry", field: "entry_ids" }),
                Some("admitted") => return Err(Error::AlreadyAdmitted { entry_id: id.to_string() }),
                Some(_) => {}
            }
        }
        let state = if cmd.approve { "approved" } else { "rejected" };
        let changed = wl::review(&mut tx, &sorted, state, &cmd.reason, &cmd.reviewed_by).await?;
        if !changed.is_empty() {
            let event = Event::waitlist_reviewed(&changed, cmd.approve, &cmd.reason, &cmd.reviewed_by);
            outbox::append(&mut tx, &[event]).await?;
            // Entries are named by id (applicants are not members).
            let ids: Vec<String> = changed.iter().map(|(id, _)| id.to_string()).collect();
            let entry = HistoryEntry::new(Operation::WaitlistReview, &cmd.reviewed_by)
                .reason(&cmd.reason)
                .detail("decision", state)
                .detail("entries", ids.join(","));
            history::append(&mut tx, &entry).await?;
        }
        let rows = wl::get_many(&mut tx, &cmd.entries).await?;
        tx.commit().await?;
        if !changed.is_empty() {
            self.waker.committed();
        }
        tracing::info!(changed = changed.len(), approved = cmd.approve, "reviewed waitlist entries");
        let entries = self.in_order(&cmd.entries, rows)?;
        Ok(ReviewOutcome { entries, changed: changed.len() as u32 })
    }

    /// Entries in the order of `ids`.
    fn in_order(&self, ids: &[Uuid], rows: Vec<EntryRow>) -> Result<Vec<Entry>, Error> {
        let mut by_id: HashMap<Uuid, EntryRow> = rows.into_iter().map(|r| (r.id, r)).collect();
        ids.iter().filter_map(|id| by_id.remove(id)).map(|row| self.entry(row)).collect()
    }

    /// AdmitFromWaitlist: picks, mints and marks in one transaction, so a
    /// process that dies midway admits nobody; entries another admitter
    /// holds are skipped.
    #[tracing::instrument(name = "db.admit_from_waitlist", skip_all, fields(db.system = "postgresql"))]
    pub async fn admit_from_waitlist(&self, cmd: AdmitCommand) -> Result<AdmitOutcome, Error> {
        let states: &[&str] = if self.waitlist.review_required { &["approved"] } else { &["waiting", "approved"] };
        let n = i64::from(cmd.count);
        if cmd.dry_run {
            let mut conn = self.pool.acquire().await?;
            let picked = wl::pick(&mut conn, states, cmd.order, n, false).await?;
            let ids: Vec<Uuid> = picked.iter().map(|c| c.id).collect();
            let rows = wl::get_many(&mut conn, &ids).await?;
            let entries = self.in_order(&ids, rows)?;
            let exhausted = entries.len() < cmd.count as usize;
            return Ok(AdmitOutcome { entries, batch_id: None, exhausted, dry_run: true });
        }
        let mut tx = self.pool.begin().await?;
        let picked = wl::pick(&mut tx, states, cmd.order, n, true).await?;
        let exhausted = picked.len() < cmd.count as usize;
        // Applicants the pick passed over because they became members
        // meanwhile leave the line, so the positions behind them move up.
        let last = if exhausted { None } else { picked.last().map(|c| (c.score, c.seq)) };
        let closed = wl::close_members_ahead(&mut tx, states, cmd.order, last, BECAME_MEMBER, ADMISSION).await?;
        if !closed.is_empty() {
            let event = Event::waitlist_reviewed(&closed, false, BECAME_MEMBER, ADMISSION);
            outbox::append(&mut tx, &[event]).await?;
            let ids: Vec<String> = closed.iter().map(|(id, _)| id.to_string()).collect();
            let entry = HistoryEntry::new(Operation::WaitlistReview, &cmd.admitted_by)
                .reason(BECAME_MEMBER)
                .detail("decision", "rejected")
                .detail("entries", ids.join(","));
            history::append(&mut tx, &entry).await?;
        }
        if picked.is_empty() {
            if closed.is_empty() {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
                self.waker.committed();
            }
            return Ok(AdmitOutcome { entries: Vec::new(), batch_id: None, exhausted, dry_run: false });
        }
        // A referrer who is a member (with invite privileges) invites;
        // otherwise the invitation is unowned.
        let mut referrers: Vec<String> = picked.iter().filter_map(|c| c.referrer.clone()).collect();
        referrers.sort();
        referrers.dedup();
        let members = wl::enabled_members(&mut tx, &referrers).await?;
        let owners: Vec<Option<String>> =
            picked.iter().map(|c| c.referrer.clone().filter(|r| members.binary_search(r).is_ok())).collect();
        let batch = BatchAttributes {
            id: Uuid::now_v7(),
            label: &cmd.label,
            note: &cmd.note,
            minted_by: &cmd.admitted_by,
            max_uses: 1,
            expire_time: cmd.ttl.map(|ttl| OffsetDateTime::now_utc() + ttl),
            key_id: self.vault.current_key_id(),
            // Bound to each entry's applicant: the batch says the kind (and
            // the minted events show it); the digests differ per invitation
            // and are set below in this transaction. Until then the empty
            // digest admits nobody.
            binding: Some((BindingKind::Applicant, Vec::new())),
            attributes: &crate::domain::attributes::NONE,
        };
        let minted = self.mint_batch(&mut tx, &batch, Recipients::Listed(&owners), usize::MAX).await?;
        // Invitations of one owner are alike: hand them out per owner.
        let mut by_owner: HashMap<Option<String>, Vec<Invitation>> = HashMap::new();
        for inv in minted {
            by_owner.entry(inv.inviter_id.clone()).or_default().push(inv);
        }
        let mut paired: Vec<(Uuid, &str, Invitation)> = Vec::with_capacity(picked.len());
        for (candidate, owner) in picked.iter().zip(&owners) {
            let inv = by_owner.get_mut(owner).and_then(Vec::pop).ok_or_else(|| internal("minted fewer than picked"))?;
            paired.push((candidate.id, candidate.applicant_id.as_str(), inv));
        }
        let entry_ids: Vec<Uuid> = paired.iter().map(|(id, _, _)| *id).collect();
        let invitation_ids: Vec<Uuid> = paired.iter().map(|(_, _, inv)| inv.id).collect();
        let mut digests = Vec::with_capacity(paired.len());
        for (_, applicant, _) in &paired {
            digests
                .push(Binding::applicant(applicant).digest().map_err(|e| internal(format!("OS random source: {e}")))?);
        }
        invitations::set_binding_digests(&mut tx, &invitation_ids, &digests).await?;
        wl::mark_admitted(&mut tx, &entry_ids, &invitation_ids).await?;
        let events: Vec<Event> = paired
            .iter()
            .map(|(id, applicant_id, invitation)| {
                Event::waitlist_admitted(
                    &Admitted { entry_id: *id, applicant_id, invitation },
                    self.code_disclosure.as_ref(),
                )
            })
            .collect();
        outbox::append(&mut tx, &events).await?;
        let entry = HistoryEntry::new(Operation::WaitlistAdmit, &cmd.admitted_by)
            .batch(batch.id)
            .invitations(invitation_ids.iter().copied())
            .detail("count", paired.len());
        history::append(&mut tx, &entry).await?;
        let rows = wl::get_many(&mut tx, &entry_ids).await?;
        tx.commit().await?;
        self.waker.committed();
        self.metrics.minted(paired.len() as u64);
        tracing::info!(batch_id = %batch.id, admitted = paired.len(), exhausted, "admitted from the waitlist");
        let mut entries = self.in_order(&entry_ids, rows)?;
        for (entry, (_, _, inv)) in entries.iter_mut().zip(&paired) {
            entry.code.clone_from(&inv.code);
        }
        Ok(AdmitOutcome { entries, batch_id: Some(batch.id), exhausted, dry_run: false })
    }
}
