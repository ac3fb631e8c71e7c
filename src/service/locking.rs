//! Taking the tree locks a change of the graph's shape needs, shared by
//! Redeem (an invitee joins a tree, possibly bringing its own) and Reparent
//! (a subtree moves). docs/design.md, "Graph storage", says why this is
//! race-free.

use crate::domain::Member;
use crate::store::tree::{LockMode, lock_trees};
use crate::store::{Tx, graph};

/// The member to move and its new parent, locked: the mover's row `FOR
/// UPDATE`, the parent's `FOR SHARE`, the mover's tree exclusively and the
/// parent's tree shared. `None` when either user is unknown.
pub(super) struct Locked {
    pub mover: Member,
    pub parent: Option<Member>,
}

/// Locks the trees of `mover` and `parent` and then their rows. The roots
/// are read without a lock first, so they may change before the tree locks
/// are granted (a concurrent move); after the rows are read under the locks
/// the roots are checked again, and on a change the new roots are locked too
/// and the rows read again. Once the locks on the current roots are held,
/// nothing can move either member.
pub(super) async fn lock_move(
    tx: &mut Tx<'_>,
    mover: &str,
    parent: Option<&str>,
) -> Result<Option<Locked>, sqlx::Error> {
    let mut held: Vec<(i64, LockMode)> = Vec::new();
    let holds = |held: &[(i64, LockMode)], root: i64, mode: LockMode| {
        held.iter().any(|&(r, m)| r == root && (m == LockMode::Exclusive || m == mode))
    };
    loop {
        let Some(mover_root) = graph::root_of(tx, mover).await? else { return Ok(None) };
        let parent_root = match parent {
            Some(p) => match graph::root_of(tx, p).await? {
                Some(root) => Some(root),
                None => return Ok(None),
            },
            None => None,
        };
        let mut wanted = vec![(mover_root, LockMode::Exclusive)];
        wanted.extend(parent_root.map(|root| (root, LockMode::Shared)));
        wanted.retain(|&(root, mode)| !holds(&held, root, mode));
        if !wanted.is_empty() {
            lock_trees(tx, &wanted).await?;
            held.extend(wanted);
        }
        let Some(mover_row) = graph::lock_member(tx, mover).await? else { return Ok(None) };
        let parent_row = match parent {
            Some(p) => match graph::share_member(tx, p).await? {
                Some(row) => Some(row),
                None => return Ok(None),
            },
            None => None,
        };
        let stable = mover_row.root_id() == mover_root && parent_row.as_ref().map(Member::root_id) == parent_root;
        if stable {
            return Ok(Some(Locked { mover: mover_row, parent: parent_row }));
        }
    }
}
