//! A consistency check of the stored invite graph, for tests that change it
//! under concurrency: paths against inviter edges, counters against a recount.

use crate::helpers::TestApp;

impl TestApp {
    /// Checks the stored graph against itself: every path is its inviter's
    /// path plus its own id (a root's is just its id), and every member's
    /// counters (folded plus pending deltas) equal a recount.
    pub async fn assert_graph_consistent(&self) {
        let pool = self.pool().await;
        let bad_paths: Vec<String> = sqlx::query_scalar(
            "SELECT m.user_id FROM members m LEFT JOIN members p ON p.user_id = m.inviter_id \
             WHERE m.path IS DISTINCT FROM CASE WHEN m.inviter_id IS NULL THEN ARRAY[m.id] ELSE p.path || m.id END",
        )
        .fetch_all(&pool)
        .await
        .expect("path check");
        assert!(bad_paths.is_empty(), "paths out of step with inviters: {bad_paths:?}");
        let bad_counts: Vec<String> = sqlx::query_scalar(
            "WITH actual AS ( \
                 SELECT m.id, \
                        (SELECT count(*) FROM members d WHERE d.path > m.path AND d.path[1:cardinality(m.path)] = m.path) AS descendants, \
                        (SELECT count(*) FROM members c WHERE c.inviter_id = m.user_id) AS invitees \
                 FROM members m), \
             stored AS ( \
                 SELECT m.id, coalesce(c.descendants, 0) + coalesce(sum(d.descendants), 0) AS descendants, \
                        coalesce(c.invitees, 0) + coalesce(sum(d.invitees), 0) AS invitees \
                 FROM members m LEFT JOIN member_counts c ON c.member_id = m.id \
                 LEFT JOIN member_count_deltas d ON d.member_id = m.id \
                 GROUP BY m.id, c.descendants, c.invitees) \
             SELECT m.user_id FROM members m JOIN actual a ON a.id = m.id JOIN stored s ON s.id = m.id \
             WHERE a.descendants <> s.descendants OR a.invitees <> s.invitees",
        )
        .fetch_all(&pool)
        .await
        .expect("count check");
        assert!(bad_counts.is_empty(), "counters out of step: {bad_counts:?}");
        pool.close().await;
    }
}
