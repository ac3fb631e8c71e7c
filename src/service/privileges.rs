//! SetInvitePrivileges: enable or disable a member's invite privileges, and
//! optionally revoke the unspent invitations of everyone below them.
//!
//! Race-free with Redeem: the change locks the member's row `FOR UPDATE`, and
//! a redeem reads its inviter `FOR SHARE` before spending, so a redeem either
//! finished before the change committed or sees it. The other checks (Mint,
//! Reserve, CheckCode) read without a lock: at worst they act on the state
//! of a moment ago, and Redeem checks again.

use super::*;
use crate::domain::InvitePrivileges;

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
        }
        let revoked = if cmd.revoke_subtree {
            invitations::revoke_unspent_below(&mut tx, &member.path, &cmd.reason, &cmd.updated_by).await?
        } else {
            0
        };
        let member = graph::member(&mut tx, cmd.user.as_str()).await?.ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        tracing::info!(enabled = cmd.enabled, changed, revoked, "set invite privileges");
        Ok(PrivilegesOutcome { privileges: member.privileges, changed, revoked })
    }
}
