//! EraseMember (docs/design.md, "Erasure"): the member's user id is replaced
//! by a stable tombstone everywhere the service keeps it, in one transaction
//! under the member's tree and row locks, so the graph keeps its shape,
//! counts and stats and no stored row names the member afterwards (except
//! the one pending `erased` event, which carries the old id on purpose).

use uuid::Uuid;

use super::{Answer, Idempotency, Invitations, answer_aad, locking};
use crate::crypto::vault::Purpose;
use crate::domain::UserId;
use crate::domain::error::Error;
use crate::domain::events::{self, Event};
use crate::domain::history::{Entry, Operation};
use crate::store::history;
use crate::store::{invitations, outbox, privacy};

/// The reason recorded on the member's unspent invitations.
pub const ERASED_REASON: &str = "erased";

pub struct EraseCommand {
    pub user: UserId,
    pub reason: String,
    pub erased_by: String,
}

#[derive(Debug, Clone)]
pub struct EraseOutcome {
    pub tombstone: String,
    pub changed: bool,
    pub revoked: u32,
}

impl Invitations {
    #[tracing::instrument(name = "db.erase_member", skip_all, fields(db.system = "postgresql"))]
    pub async fn erase_member(
        &self,
        cmd: EraseCommand,
        idem: Idempotency<'_, EraseOutcome>,
    ) -> Result<Answer<EraseOutcome>, Error> {
        if let Some(bytes) = self.replay("EraseMember", &idem).await? {
            return Ok(Answer::Replayed(bytes));
        }
        let old = cmd.user.as_str();
        let digests = self.vault.hashes(Purpose::Code, &erasure_input(old));
        let mut attempts = 0;
        let (mut tx, target) = loop {
            attempts += 1;
            let mut tx = self.pool.begin().await?;
            if let Some(locked) = locking::lock_move(&mut tx, old, None).await? {
                break (tx, Target::Member(locked.mover.id));
            }
            // Unknown, erased already (then the same answer again), or an
            // applicant on the waitlist who never became a member.
            if let Some(tombstone) = privacy::tombstone(&mut tx, &digests).await? {
                let outcome = EraseOutcome { tombstone, changed: false, revoked: 0 };
                return self.commit_answer(tx, "EraseMember", &idem, outcome).await;
            }
            match privacy::lock_applicant(&mut tx, old).await? {
                privacy::Locked::None => return Err(Error::NotFound { what: "member", field: "user_id" }),
                // A redeem of its admitted invitation committed first, or
                // it was admitted meanwhile: again, as the member it is now.
                privacy::Locked::Applicant(a) if !privacy::is_member(&mut tx, old).await? => {
                    break (tx, Target::Applicant(a));
                }
                _ if attempts < MAX_ATTEMPTS => {}
                _ => return Err(Error::Unavailable(anyhow::anyhow!("the applicant kept changing under the erasure"))),
            }
        };
        let tomb = format!("erased:{}", Uuid::new_v4().simple());
        let rewritten = privacy::rewrite(&mut tx, old, &tomb).await?;
        let mut unspent = rewritten.unspent;
        if let Target::Applicant(a) = &target {
            // The invitation it was admitted with is bound to it: nobody
            // else may use it, and it is gone.
            unspent.extend(a.invitation_id);
            privacy::withdraw_entry(&mut tx, a.entry_id, ERASED_REASON).await?;
        }
        let revoked = invitations::revoke_ids(&mut tx, &unspent, ERASED_REASON, &cmd.erased_by).await?;
        for (seq, payload) in privacy::pending_payloads(&mut tx, &rewritten.pending).await? {
            if let Some(renamed) = events::rename_user(&payload, old, &tomb) {
                privacy::replace_payload(&mut tx, seq, &renamed).await?;
            }
        }
        let mut dropped = 0u32;
        for answer in privacy::stored_answers(&mut tx).await? {
            let plain = match answer.response_key_id {
                None => Some(answer.response),
                Some(key_id) => {
                    self.vault.open(key_id, &answer_aad(&answer.method, &answer.request_id), &answer.response)
                }
            };
            // An answer sealed under a secret no longer configured cannot
            // be read by anyone: it names nobody.
            if plain.is_some_and(|p| contains(&p, old.as_bytes())) {
                privacy::delete_answer(&mut tx, &answer.method, &answer.request_id).await?;
                dropped += 1;
            }
        }
        privacy::record(&mut tx, &digests[0], &tomb).await?;
        history::erase(&mut tx, old, &tomb).await?;
        let entry = Entry::new(Operation::Erase, &cmd.erased_by)
            .users([tomb.as_str()])
            .invitations(revoked.iter().map(|inv| inv.id))
            .reason(&cmd.reason)
            .request(idem.request_id.as_ref())
            .detail("revoked", revoked.len());
        history::append(&mut tx, &entry).await?;
        let mut out = events::revoked(&revoked, ERASED_REASON, &cmd.erased_by);
        out.push(Event::erased(old, &tomb));
        outbox::append(&mut tx, &out).await?;
        let (member_id, entry_id) = match &target {
            Target::Member(id) => (Some(*id), None),
            Target::Applicant(a) => (None, Some(a.entry_id)),
        };
        tracing::info!(
            member_id,
            entry_id = entry_id.map(tracing::field::display),
            revoked = revoked.len(),
            pending_rewritten = rewritten.pending.len(),
            answers_dropped = dropped,
            reason = %cmd.reason,
            "erased a member"
        );
        let outcome = EraseOutcome { tombstone: tomb, changed: true, revoked: revoked.len() as u32 };
        self.commit_answer(tx, "EraseMember", &idem, outcome).await
    }
}

/// Rounds of looking for the one to erase before giving up (each lost only
/// to a redeem or admission that committed in between).
const MAX_ATTEMPTS: u32 = 3;

/// Who is erased: a member (by its internal number, locked by
/// `locking::lock_move`), or a waitlist applicant who never joined.
enum Target {
    Member(i64),
    Applicant(privacy::Applicant),
}

/// What the erasure digest is computed over: the user id under its own
/// label, so it never equals a code's lookup hash.
fn erasure_input(user_id: &str) -> Vec<u8> {
    [b"erased-member\0".as_slice(), user_id.as_bytes()].concat()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_inside_an_encoded_answer() {
        assert!(contains(b"\x0a\x05alice\x10", b"alice"));
        assert!(!contains(b"\x0a\x03bob", b"alice"));
        assert!(!contains(b"abc", b""));
    }

    #[test]
    fn the_erasure_digest_input_is_labelled() {
        assert_ne!(erasure_input("a"), b"a".to_vec());
    }
}
