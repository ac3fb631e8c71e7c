//! Mint, and the one insert path behind every invitation the service
//! creates: Mint for named users and unowned ones, waves (Mint by selector,
//! `wave`) and the quota policies' grants (`quotas`). Each call is one batch,
//! inserted in chunks with its minted events in the caller's transaction.

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::crypto::vault::Purpose;
use crate::domain::attributes::Attributes;
use crate::domain::code::InvitationCode;
use crate::domain::email::Binding;
use crate::domain::error::Error;
use crate::domain::history::{Entry, Operation};
use crate::domain::selector::Wave;
use crate::domain::{Invitation, UserId, events};
use crate::store::history;
use crate::store::invitations::{self, BatchAttributes, NewInvitation, Owner};
use crate::store::{members, outbox};

use super::{Answer, Idempotency, Invitations, MAX_CODE_DRAWS, internal};

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
    /// Bind every minted invitation to one address or domain.
    pub binding: Option<Binding>,
    /// Mint for members a selector chooses instead (then `owners` is empty
    /// and `unowned` 0).
    pub wave: Option<Wave>,
    /// Carried by every minted invitation.
    pub attributes: Attributes,
    /// A vanity code for the one invitation (`InvitationCode::parse_vanity`).
    pub custom_code: Option<InvitationCode>,
}

#[derive(Default)]
pub struct MintOutcome {
    /// All minted invitations, or for a wave the first `MAX_WAVE_LISTED`.
    pub invitations: Vec<Invitation>,
    pub batch_id: Option<Uuid>,
    pub count: u32,
    pub dry_run: bool,
    /// Waves: members the selector matched.
    pub matched: u32,
    /// Waves: who gets one (at most `MAX_WAVE_LISTED`).
    pub recipients: Vec<String>,
    /// Waves: `invitations` lists only part of them.
    pub truncated: bool,
}

/// Invitations per insert statement (and per round of minted events): a
/// wave of a million members is a hundred statements of bounded size.
pub(crate) const CHUNK: usize = 10_000;

/// Who the invitations of one batch are for, in order.
pub(crate) enum Recipients<'a> {
    /// One invitation per entry: that inviter, or unowned.
    Listed(&'a [Option<String>]),
    /// One invitation per slot 1..=n of the transaction's wave table.
    Wave(usize),
}

impl Recipients<'_> {
    fn len(&self) -> usize {
        match self {
            Recipients::Listed(owners) => owners.len(),
            Recipients::Wave(n) => *n,
        }
    }

    fn owner(&self, i: usize) -> Owner {
        match self {
            Recipients::Listed(owners) => Owner::Named(owners[i].clone()),
            Recipients::Wave(_) => Owner::WaveSlot(i as i64 + 1),
        }
    }
}

impl Invitations {
    #[tracing::instrument(name = "db.mint", skip_all, fields(db.system = "postgresql"))]
    pub async fn mint(
        &self,
        cmd: MintCommand,
        idem: Idempotency<'_, MintOutcome>,
    ) -> Result<Answer<MintOutcome>, Error> {
        if let Some(wave) = cmd.wave {
            return self.mint_wave(&cmd, wave, idem).await;
        }
        let count = cmd.owners.len() as u32 * cmd.per_user + cmd.unowned;
        let owners: Vec<String> = cmd.owners.iter().map(|u| u.as_str().to_owned()).collect();
        if cmd.dry_run {
            self.refuse_disabled_owners(&owners).await?;
            let outcome = MintOutcome { count, dry_run: true, ..MintOutcome::default() };
            return Ok(Answer::Fresh(outcome));
        }
        if let Some(bytes) = self.replay("Mint", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        self.refuse_disabled_owners(&owners).await?;
        let batch = self.batch_attributes(&cmd)?;
        let mut listed: Vec<Option<String>> = Vec::with_capacity(count as usize);
        for owner in &owners {
            listed.extend(std::iter::repeat_n(Some(owner.clone()), cmd.per_user as usize));
        }
        listed.extend(std::iter::repeat_n(None, cmd.unowned as usize));

        let mut tx = self.pool.begin().await?;
        members::ensure(&mut tx, &owners).await?;
        let minted = match &cmd.custom_code {
            Some(code) => self.mint_vanity(&mut tx, &batch, listed.pop().flatten(), code).await?,
            None => self.mint_batch(&mut tx, &batch, Recipients::Listed(&listed), usize::MAX).await?,
        };
        let entry = Entry::new(Operation::Mint, &cmd.minted_by)
            .batch(batch.id)
            .users(&owners)
            .request(idem.request_id.as_ref())
            .detail("count", count)
            .detail("label", &cmd.label);
        history::append(&mut tx, &entry).await?;
        let outcome = MintOutcome { invitations: minted, batch_id: Some(batch.id), count, ..MintOutcome::default() };
        let answer = self.commit_answer(tx, "Mint", &idem, outcome).await?;
        if matches!(answer, Answer::Fresh(_)) {
            self.metrics.minted(u64::from(count));
        }
        tracing::info!(batch_id = %batch.id, count, label = %cmd.label, "minted invitations");
        Ok(answer)
    }

    /// What the invitations of a Mint call share.
    pub(super) fn batch_attributes<'a>(&self, cmd: &'a MintCommand) -> Result<BatchAttributes<'a>, Error> {
        let binding = match &cmd.binding {
            Some(b) => {
                Some((b.kind(), b.digest().map_err(|e| Error::Internal(anyhow::anyhow!("OS random source: {e}")))?))
            }
            None => None,
        };
        Ok(BatchAttributes {
            id: Uuid::now_v7(),
            label: &cmd.label,
            note: &cmd.note,
            minted_by: &cmd.minted_by,
            max_uses: cmd.max_uses as i32,
            expire_time: cmd.ttl.map(|ttl| OffsetDateTime::now_utc() + ttl),
            key_id: self.vault.current_key_id(),
            binding,
            attributes: &cmd.attributes,
        })
    }

    /// The one insert path: records the batch, inserts one invitation per
    /// recipient in chunks of [`CHUNK`] with fresh codes, and appends their
    /// minted events, all in the caller's transaction. Returns the first
    /// `listed` invitations by id (codes revealed).
    pub(crate) async fn mint_batch(
        &self,
        tx: &mut PgConnection,
        batch: &BatchAttributes<'_>,
        recipients: Recipients<'_>,
        listed: usize,
    ) -> Result<Vec<Invitation>, Error> {
        let count = recipients.len();
        invitations::insert_batch(&mut *tx, batch, count as i32).await?;
        let mut first: Vec<Invitation> = Vec::new();
        for start in (0..count).step_by(CHUNK) {
            let mut codes: HashMap<Uuid, String> = HashMap::new();
            let mut pending = Vec::with_capacity(CHUNK.min(count - start));
            for i in start..(start + CHUNK).min(count) {
                pending.push(self.new_row(recipients.owner(i), &mut codes)?);
            }
            let mut minted: Vec<Invitation> = Vec::with_capacity(pending.len());
            // A code collision (about 2^-74 per pair) only redraws that code.
            for _ in 0..MAX_CODE_DRAWS {
                let inserted = invitations::insert_invitations(&mut *tx, batch, &pending).await?;
                let done: HashSet<Uuid> = inserted.iter().map(|inv| inv.id).collect();
                for mut inv in inserted {
                    inv.code = codes.remove(&inv.id).unwrap_or_default();
                    minted.push(inv);
                }
                pending.retain(|r| !done.contains(&r.id));
                if pending.is_empty() {
                    break;
                }
                for row in &mut pending {
                    *row = self.new_row(row.owner.clone(), &mut codes)?;
                }
            }
            if !pending.is_empty() {
                return Err(Error::Internal(anyhow::anyhow!("code collisions did not resolve")));
            }
            minted.sort_by_key(|inv| inv.id);
            outbox::append(&mut *tx, &events::minted(&minted, self.code_disclosure.as_ref())).await?;
            if first.len() < listed {
                first.extend(minted);
                first.sort_by_key(|inv| inv.id);
                first.truncate(listed);
            }
        }
        Ok(first)
    }

    /// One invitation with an operator's vanity code (Mint checked there is
    /// exactly one): recorded like any batch, but a taken code is the
    /// caller's error (CODE_TAKEN), not a redraw.
    async fn mint_vanity(
        &self,
        tx: &mut PgConnection,
        batch: &BatchAttributes<'_>,
        owner: Option<String>,
        code: &InvitationCode,
    ) -> Result<Vec<Invitation>, Error> {
        invitations::insert_batch(&mut *tx, batch, 1).await?;
        let mut codes = HashMap::new();
        let row = self.row_for(Owner::Named(owner), code, &mut codes)?;
        let Some(mut inv) = invitations::insert_invitations(&mut *tx, batch, &[row]).await?.pop() else {
            return Err(Error::CodeTaken);
        };
        inv.code = code.as_str().to_owned();
        outbox::append(&mut *tx, &events::minted(std::slice::from_ref(&inv), self.code_disclosure.as_ref())).await?;
        Ok(vec![inv])
    }

    /// A member whose invite privileges are disabled cannot receive
    /// invitations: the whole call is refused, naming the first such member.
    /// (Read without a lock: a disable racing this mint leaves invitations
    /// that Redeem refuses while it lasts.)
    async fn refuse_disabled_owners(&self, owners: &[String]) -> Result<(), Error> {
        if owners.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await?;
        match members::first_disabled(&mut conn, owners).await? {
            Some(user_id) => Err(Error::InvitePrivilegesDisabled { user_id }),
            None => Ok(()),
        }
    }

    /// A fresh code, kept only as its lookup hash and sealed under the
    /// invitation's id (docs/design.md, "Codes at rest"); the code itself
    /// goes into `codes` for the answer and the events.
    pub(super) fn new_row(&self, owner: Owner, codes: &mut HashMap<Uuid, String>) -> Result<NewInvitation, Error> {
        let code = self.codes.generate().map_err(|e| Error::Internal(anyhow::anyhow!("OS random source: {e}")))?;
        self.row_for(owner, &code, codes)
    }

    /// The row for `code`: its lookup hash and sealed form.
    fn row_for(
        &self,
        owner: Owner,
        code: &InvitationCode,
        codes: &mut HashMap<Uuid, String>,
    ) -> Result<NewInvitation, Error> {
        let id = Uuid::now_v7();
        let sealed = self.vault.seal(id.as_bytes(), code.as_str().as_bytes()).map_err(internal)?;
        let row = NewInvitation {
            id,
            code_hash: self.vault.hash(Purpose::Code, code.as_str().as_bytes()),
            code_ciphertext: sealed.bytes,
            owner,
        };
        codes.insert(id, code.as_str().to_owned());
        Ok(row)
    }
}
