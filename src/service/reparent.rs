//! Reparent: an operator fixes who invited a user. The user's whole subtree
//! moves with it; a move under the user itself or one of its descendants is
//! refused (INVITE_CYCLE). Every move is recorded (who, why, when, how many
//! members moved). The graph changes, history does not: the redemption and
//! the invitation keep the owner they had.

use crate::domain::error::Error;
use crate::domain::history::{Entry, Operation};
use crate::domain::{Member, UserId};
use crate::store::history;
use crate::store::tree::{self, ReparentRecord};
use crate::store::{self, graph};

use super::{Invitations, locking};

pub struct ReparentCommand {
    pub user: UserId,
    /// `None`: the user becomes a root.
    pub new_inviter: Option<UserId>,
    pub reason: String,
    pub reparented_by: String,
}

pub struct ReparentOutcome {
    /// The user after the move.
    pub member: Member,
    pub old_inviter_id: Option<String>,
    /// The user and everyone below it; 0 when nothing changed.
    pub moved_count: i64,
    pub changed: bool,
}

impl Invitations {
    #[tracing::instrument(name = "db.reparent", skip_all, fields(db.system = "postgresql"))]
    pub async fn reparent(&self, cmd: ReparentCommand) -> Result<ReparentOutcome, Error> {
        let cmd = &cmd;
        // Two moves that each wait for the other's tree: one retries.
        let (outcome, tx) = store::with_retry(&self.pool, store::is_retryable, |mut tx| async move {
            let result = reparent_in(&mut tx, cmd).await;
            (tx, result)
        })
        .await?;
        tx.commit().await?;
        if outcome.changed {
            tracing::info!(moved = outcome.moved_count, "reparented a member");
        }
        Ok(outcome)
    }
}

async fn reparent_in(tx: &mut store::Tx<'_>, cmd: &ReparentCommand) -> Result<ReparentOutcome, Error> {
    let user = cmd.user.as_str();
    let new_inviter = cmd.new_inviter.as_ref().map(UserId::as_str);
    let Some(locked) = locking::lock_move(tx, user, new_inviter).await? else {
        let field = if graph::root_of(tx, user).await?.is_none() { "user_id" } else { "new_inviter_id" };
        return Err(Error::NotFound { what: "member", field });
    };
    let (mover, parent) = (locked.mover, locked.parent);
    if parent.as_ref().is_some_and(|p| p.path.contains(&mover.id)) {
        return Err(Error::InviteCycle);
    }
    if mover.inviter_id.as_deref() == new_inviter {
        return Ok(ReparentOutcome {
            old_inviter_id: mover.inviter_id.clone(),
            member: mover,
            moved_count: 0,
            changed: false,
        });
    }
    let moved_count = tree::graft(tx, &mover, parent.as_ref()).await?;
    tree::set_inviter(tx, mover.id, new_inviter).await?;
    let record = ReparentRecord {
        user_id: user,
        old_inviter_id: mover.inviter_id.as_deref(),
        new_inviter_id: new_inviter,
        moved_count,
        reason: &cmd.reason,
        reparented_by: &cmd.reparented_by,
    };
    tree::record_reparent(tx, &record).await?;
    let entry = Entry::new(Operation::Reparent, &cmd.reparented_by)
        .users([Some(user), mover.inviter_id.as_deref(), new_inviter].into_iter().flatten())
        .reason(&cmd.reason)
        .detail("moved", moved_count);
    history::append(tx, &entry).await?;
    let member = graph::member(tx, user).await?.ok_or(sqlx::Error::RowNotFound)?;
    Ok(ReparentOutcome { member, old_inviter_id: mover.inviter_id, moved_count, changed: true })
}
