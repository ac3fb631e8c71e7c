//! SetInvitePrivileges: enable or disable a member's invite privileges, and
//! optionally revoke the unspent invitations of everyone below them.
//!
//! A change appends a `privileges_changed` event, and the subtree revoke
//! `revoked` events, in the same transaction (`events`).
//!
//! Race-free with Redeem: the change locks the member's row `FOR UPDATE`, and
//! a redeem reads its inviter `FOR SHARE` before spending, so a redeem either
//! finished before the change committed or sees it. The other checks (Mint,
//! Reserve, CheckCode) read without a lock: at worst they act on the state
//! of a moment ago, and Redeem checks again.

use crate::domain::error::Error;
use crate::domain::events::{self, Event};
use crate::domain::history::{Entry, Operation};
use crate::domain::{InvitePrivileges, Member, UserId};
use crate::store::history;
use crate::store::{self, graph, invitations, members, outbox, tree};

use super::Invitations;

pub struct PrivilegesCommand {
    pub user: UserId,
    pub enabled: bool,
    pub reason: String,
    /// Also revoke the unspent invitations of every member below `user`.
    pub revoke_subtree: bool,
    pub updated_by: String,
}

pub struct PrivilegesOutcome {
    pub privileges: InvitePrivileges,
    pub changed: bool,
    pub revoked: u64,
}

/// Members whose invitations one step of a subtree revoke takes (bounds the
/// memory a revoke of a huge subtree needs).
const REVOKE_CHUNK: i64 = 1000;

impl Invitations {
    #[tracing::instrument(name = "db.set_invite_privileges", skip_all, fields(db.system = "postgresql"))]
    pub async fn set_invite_privileges(&self, cmd: PrivilegesCommand) -> Result<PrivilegesOutcome, Error> {
        let mut tx = self.pool.begin().await?;
        let Some(member) = graph::lock_member(&mut tx, cmd.user.as_str()).await? else {
            return Err(Error::NotFound { what: "member", field: "user_id" });
        };
        let changed = member.privileges.enabled != cmd.enabled;
        if changed {
            members::set_privileges(&mut tx, member.id, cmd.enabled, &cmd.reason, &cmd.updated_by).await?;
            let event = Event::privileges_changed(&member.user_id, cmd.enabled, &cmd.reason, &cmd.updated_by);
            outbox::append(&mut tx, &[event]).await?;
        }
        let revoked = if cmd.revoke_subtree { revoke_below(&mut tx, &member, &cmd).await? } else { 0 };
        if changed || revoked > 0 {
            let entry = Entry::new(Operation::Privileges, &cmd.updated_by)
                .users([cmd.user.as_str()])
                .reason(&cmd.reason)
                .detail("enabled", cmd.enabled)
                .detail("revoked", revoked);
            history::append(&mut tx, &entry).await?;
        }
        let member = graph::member(&mut tx, cmd.user.as_str()).await?.ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        self.waker.committed();
        tracing::info!(enabled = cmd.enabled, changed, revoked, "set invite privileges");
        Ok(PrivilegesOutcome { privileges: member.privileges, changed, revoked })
    }
}

/// Revokes the unspent invitations of every member below `member`, walking
/// the subtree in chunks of members (each chunk's revoked events appended
/// as it goes). Not under the tree lock: a member that a concurrent Reparent
/// moves into or out of the subtree may or may not be included.
async fn revoke_below(tx: &mut store::Tx<'_>, member: &Member, cmd: &PrivilegesCommand) -> Result<u64, sqlx::Error> {
    let to = tree::subtree_end(&member.path);
    let mut from = tree::after(&member.path, None);
    let mut total = 0;
    loop {
        let chunk = graph::page(tx, &from, &to, None, REVOKE_CHUNK).await?;
        let owners: Vec<String> = chunk.iter().map(|m| m.user_id.clone()).collect();
        let revoked = invitations::revoke_unspent_of_all(tx, &owners, &cmd.reason, &cmd.updated_by).await?;
        outbox::append(tx, &events::revoked(&revoked, &cmd.reason, &cmd.updated_by)).await?;
        total += revoked.len() as u64;
        match chunk.last() {
            Some(last) if chunk.len() as i64 == REVOKE_CHUNK => from = tree::after(&last.path, None),
            _ => return Ok(total),
        }
    }
}
