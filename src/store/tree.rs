//! SQL that changes the shape of the invite graph: tree locks, moving a
//! subtree (`graft`) with its count deltas (folded by `store::fold` with
//! `MEMBER_COUNTS`), and the reparent record; and the path arithmetic the range queries use.
//!
//! Locking (docs/design.md, "Graph storage"): every statement that reads a
//! parent's path to write a child's takes its tree's lock shared; every move
//! of a subtree takes the lock of the subtree's tree exclusively (and the
//! destination tree's shared). Keys are the root's id XOR a tag, so they do
//! not collide with the constant advisory keys used elsewhere.

use sqlx::PgConnection;

use crate::domain::Member;

const TREE_LOCK_TAG: i64 = 0x7472_6565_0000_0000; // "tree"

/// How a transaction holds a tree's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Adding members under a node of the tree: many at once.
    Shared,
    /// Moving a subtree of the tree: alone.
    Exclusive,
}

/// Takes these trees' locks until the transaction ends, in ascending key
/// order (so two callers never wait for each other in a circle). A root named
/// twice is locked once, exclusively if either asks for that.
pub async fn lock_trees(conn: &mut PgConnection, locks: &[(i64, LockMode)]) -> Result<(), sqlx::Error> {
    let mut keys: Vec<(i64, bool)> =
        locks.iter().map(|(root, mode)| (root ^ TREE_LOCK_TAG, *mode == LockMode::Exclusive)).collect();
    keys.sort_unstable();
    keys.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            earlier.1 |= later.1;
        }
        same
    });
    let (ids, exclusive): (Vec<i64>, Vec<bool>) = keys.into_iter().unzip();
    // The sorted subquery (OFFSET 0 keeps it from being flattened) feeds the
    // calls one row at a time, so the locks are taken in key order.
    sqlx::query!(
        "SELECT CASE WHEN t.exclusive THEN pg_advisory_xact_lock(t.key) ELSE pg_advisory_xact_lock_shared(t.key) END \
         FROM (SELECT key, exclusive FROM unnest($1::bigint[], $2::bool[]) AS u(key, exclusive) \
               ORDER BY key OFFSET 0) t",
        &ids,
        &exclusive
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The smallest path after every path that starts with `path` (the end of
/// its subtree's range).
pub fn subtree_end(path: &[i64]) -> Vec<i64> {
    match path.split_last() {
        Some((last, prefix)) => {
            let mut end = prefix.to_vec();
            end.push(last.saturating_add(1));
            end
        }
        None => vec![i64::MAX],
    }
}

/// Where a depth-first page continues after the member at `path`: its first
/// child, or past its subtree when it is at `max_len` (so that subtree is
/// left out). Ids are positive, so `path ++ [0]` is the smallest path after
/// `path` itself.
pub fn after(path: &[i64], max_len: Option<usize>) -> Vec<i64> {
    if max_len.is_some_and(|max| path.len() >= max) {
        subtree_end(path)
    } else {
        let mut next = path.to_vec();
        next.push(0);
        next
    }
}

/// Moves `subtree` (the member and everything below it) under `parent`, or
/// makes it a root; returns how many members moved. Appends the count deltas
/// for the old and the new ancestors (net of the ones they share). The
/// caller holds the subtree's tree lock exclusively and the parent's tree
/// lock, and has ruled out cycles.
pub async fn graft(conn: &mut PgConnection, subtree: &Member, parent: Option<&Member>) -> Result<i64, sqlx::Error> {
    let old_prefix = &subtree.path[..subtree.path.len().saturating_sub(1)];
    let new_prefix: &[i64] = parent.map_or(&[], |p| p.path.as_slice());
    sqlx::query_scalar!(
        "WITH moved AS ( \
             UPDATE members SET path = $3::bigint[] || path[$4:] \
             WHERE path >= $1 AND path < $2 RETURNING 1), \
         size AS (SELECT count(*) AS n FROM moved), \
         changes (id, descendants, invitees) AS ( \
             SELECT a.id, -s.n, CASE WHEN a.ord = cardinality($5::bigint[]) THEN -1 ELSE 0 END \
             FROM unnest($5::bigint[]) WITH ORDINALITY AS a(id, ord), size s \
             UNION ALL \
             SELECT a.id, s.n, CASE WHEN a.ord = cardinality($3::bigint[]) THEN 1 ELSE 0 END \
             FROM unnest($3::bigint[]) WITH ORDINALITY AS a(id, ord), size s), \
         deltas AS ( \
             INSERT INTO member_count_deltas (member_id, descendants, invitees) \
             SELECT id, sum(descendants), sum(invitees) FROM changes GROUP BY id \
             HAVING sum(descendants) <> 0 OR sum(invitees) <> 0) \
         SELECT n AS \"moved!\" FROM size",
        &subtree.path,
        &subtree_end(&subtree.path),
        new_prefix,
        subtree.path.len() as i32,
        old_prefix
    )
    .fetch_one(conn)
    .await
}

pub async fn set_inviter(conn: &mut PgConnection, member_id: i64, inviter_id: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE members SET inviter_id = $2 WHERE id = $1", member_id, inviter_id).execute(conn).await?;
    Ok(())
}

/// What one Reparent did, for the record.
pub struct ReparentRecord<'a> {
    pub user_id: &'a str,
    pub old_inviter_id: Option<&'a str>,
    pub new_inviter_id: Option<&'a str>,
    pub moved_count: i64,
    pub reason: &'a str,
    pub reparented_by: &'a str,
}

/// Stores the record (its time is the transaction's).
pub async fn record_reparent(conn: &mut PgConnection, r: &ReparentRecord<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO reparents (user_id, old_inviter_id, new_inviter_id, moved_count, reason, reparented_by) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        r.user_id,
        r.old_inviter_id,
        r.new_inviter_id,
        r.moved_count,
        r.reason,
        r.reparented_by,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The graph's descendant and direct-invitee counts per member.
pub const MEMBER_COUNTS: super::Counters = super::Counters {
    counts: "member_counts",
    deltas: "member_count_deltas",
    key: "member_id",
    columns: &["descendants", "invitees"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_ranges() {
        assert_eq!(subtree_end(&[1, 7, 9]), vec![1, 7, 10]);
        assert_eq!(subtree_end(&[4]), vec![5]);
        assert_eq!(subtree_end(&[]), vec![i64::MAX]);
        // Every descendant path sorts inside [path, end); the next sibling does not.
        let inside = [vec![1, 7, 9], vec![1, 7, 9, 1], vec![1, 7, 9, i64::MAX - 1, 3]];
        for p in &inside {
            assert!(p.as_slice() >= [1, 7, 9].as_slice() && p < &subtree_end(&[1, 7, 9]), "{p:?}");
        }
        assert!(vec![1, 7, 10] >= subtree_end(&[1, 7, 9]));
    }

    #[test]
    fn continuing_after_a_member() {
        assert_eq!(after(&[1, 7], None), vec![1, 7, 0]);
        assert_eq!(after(&[1, 7], Some(3)), vec![1, 7, 0], "may still go deeper");
        assert_eq!(after(&[1, 7], Some(2)), vec![1, 8], "at the limit: skip the subtree");
        assert!(vec![1, 7, 0] < vec![1, 7, 1] && vec![1, 7] < vec![1, 7, 0]);
        assert_eq!(after(&[], None), vec![0]);
    }
}
