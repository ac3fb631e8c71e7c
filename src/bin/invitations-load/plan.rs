//! The seeded data's layout, shared by `seed` (which writes it) and `run`
//! (which must name existing users and know the seeded codes without asking
//! the database). Everything is a function of the member count, the
//! invitation count and a seed, so both sides agree by construction.
//!
//! Members are numbered 1..=members (the service's `members.id`):
//! - `roots` roots (1 per 1,000 members, at least 2);
//! - root 1 has `members / 10` direct invitees (100,000 at a million);
//! - the next `members / 10` hang under roots 2..=roots, about equally;
//! - the last half percent form chains 50 deep;
//! - everyone else picks an earlier member as inviter, skewed to the oldest
//!   (`random()^3`), which gives a heavy-tailed fan-out.
//!
//! Invitation k (0-based) has code `codes(seed)[k]`; even k belong to one of
//! `owners` direct invitees of root 1 (so redeeming them grows root 1's tree),
//! odd k to one of `owners` members under roots 2..=roots (spread over every
//! other tree). Each owner holds about `invitations / (2 * owners)`.

use invitations::domain::code::{CodeGenerator, DEFAULT_RANDOM_SYMBOLS, InvitationCode};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};

/// Which owners' invitations a Redeem load spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Trees {
    /// Every inviter a direct invitee of root 1: all redeems join one tree.
    One,
    /// Inviters under roots 2..: redeems join hundreds of trees.
    Spread,
    /// Both, alternating.
    Any,
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Layout {
    /// Members in the seeded forest.
    #[arg(long, env = "LOAD_MEMBERS", default_value_t = 1_000_000)]
    pub members: i64,
    /// Invitations seeded (codes the load generator knows).
    #[arg(long, env = "LOAD_INVITATIONS", default_value_t = 2_000_000)]
    pub invitations: i64,
    /// Seed of the code sequence: `run` must use the one `seed` used.
    #[arg(long, env = "LOAD_SEED", default_value_t = 7)]
    pub seed: u64,
}

impl Layout {
    pub fn roots(&self) -> i64 {
        (self.members / 1000).max(2)
    }

    /// Direct invitees of root 1; also the members under roots 2..
    pub fn root_one_invitees(&self) -> i64 {
        self.members / 10
    }

    /// Owners on each side (root 1's tree, the other trees).
    pub fn owners(&self) -> i64 {
        self.root_one_invitees().clamp(1, 10_000)
    }

    /// The member that owns invitation `k`.
    pub fn owner_of(&self, k: i64) -> i64 {
        let slot = (k / 2) % self.owners();
        if k % 2 == 0 { self.roots() + 1 + slot } else { self.roots() + self.root_one_invitees() + 1 + slot }
    }

    /// The `n`th invitation of a Redeem load on `trees`.
    pub fn redeem_index(&self, trees: Trees, n: i64) -> Option<i64> {
        let k = match trees {
            Trees::One => 2 * n,
            Trees::Spread => 2 * n + 1,
            Trees::Any => n,
        };
        (k < self.invitations).then_some(k)
    }

    /// The codes of invitations 0..invitations, in order.
    pub fn codes(&self) -> Vec<InvitationCode> {
        let generator = CodeGenerator::new(DEFAULT_RANDOM_SYMBOLS).expect("the default code length is valid");
        let mut rng = StdRng::seed_from_u64(self.seed);
        (0..self.invitations).map(|_| generator.generate_from(&mut rng).unwrap_or_else(|e| match e {})).collect()
    }

    /// The forest as SQL: one statement per step, run in order on a fresh
    /// database (see `seed`). `members.id` and `path` as `store::members` and
    /// `tree::graft` write them, `member_counts` as the migration computes it.
    pub fn forest_sql(&self) -> Vec<String> {
        let m = self.members;
        let roots = self.roots();
        let d = self.root_one_invitees();
        let chains_from = m - m / 200;
        vec![
            format!(
                "CREATE TEMP TABLE plan AS SELECT i AS id, \
                   CASE WHEN i <= {roots} THEN NULL \
                        WHEN i <= {roots} + {d} THEN 1 \
                        WHEN i <= {roots} + 2 * {d} THEN 2 + (i % ({roots} - 1)) \
                        WHEN i > {chains_from} THEN CASE WHEN (i - {chains_from} - 1) % 50 = 0 \
                             THEN greatest(2, floor((i - 1) * random() ^ 3))::bigint ELSE i - 1 END \
                        ELSE greatest(2, floor((i - 1) * random() ^ 3))::bigint END AS parent \
                 FROM generate_series(1, {m}) i"
            ),
            "CREATE INDEX ON plan (parent)".into(),
            "ANALYZE plan".into(),
            "CREATE TEMP TABLE paths AS WITH RECURSIVE t (id, path) AS ( \
                 SELECT id, ARRAY[id] FROM plan WHERE parent IS NULL \
                 UNION ALL SELECT p.id, t.path || p.id FROM plan p JOIN t ON p.parent = t.id) \
             SELECT * FROM t"
                .into(),
            format!(
                "INSERT INTO members (id, path, user_id, inviter_id, join_time, create_time) \
                 SELECT p.id, p.path, {user}, \
                        CASE WHEN cardinality(p.path) > 1 THEN {inviter} END, \
                        now() - interval '1 second' * ({m} - p.id), now() \
                 FROM paths p ORDER BY p.id",
                user = user_id_sql("p.id"),
                inviter = user_id_sql("p.path[cardinality(p.path) - 1]"),
            ),
            format!("ALTER SEQUENCE members_id_seq RESTART WITH {}", m + 1),
            "INSERT INTO member_counts (member_id, descendants, invitees) \
             SELECT a.id, count(*), count(*) FILTER (WHERE a.ord = cardinality(m.path) - 1) \
             FROM members m, unnest(m.path[1:cardinality(m.path) - 1]) WITH ORDINALITY AS a(id, ord) \
             GROUP BY a.id"
                .into(),
            "DROP TABLE plan, paths".into(),
        ]
    }
}

/// A member's user id, 40 bytes or so like a real one: `user_id(id)` in SQL.
fn user_id_sql(id: &str) -> String {
    format!("format('user-%s-%s', {id}, substr(encode(sha256(({id})::text::bytea), 'hex'), 1, 24))")
}

/// The user id of member `id`, as `user_id_sql` computes it.
pub fn user_id(id: i64) -> String {
    let digest = Sha256::digest(id.to_string().as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("user-{id}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout { members: 1_000_000, invitations: 2_000_000, seed: 7 }
    }

    #[test]
    fn owners_sit_where_the_layout_says() {
        let l = layout();
        assert_eq!(l.roots(), 1000);
        // Even: direct invitees of root 1 (ids roots+1 ..= roots+100,000).
        assert_eq!(l.owner_of(0), 1001);
        assert_eq!(l.owner_of(19_998), 11_000);
        assert_eq!(l.owner_of(20_000), 1001);
        // Odd: under roots 2.. (ids roots+100,001 ..).
        assert_eq!(l.owner_of(1), 101_001);
        assert_eq!(l.owner_of(19_999), 111_000);
        assert_eq!(l.redeem_index(Trees::Spread, 0), Some(1));
        assert_eq!(l.redeem_index(Trees::One, 999_999), Some(1_999_998));
        assert_eq!(l.redeem_index(Trees::One, 1_000_000), None);
    }

    #[test]
    fn codes_are_reproducible_and_valid() {
        let l = Layout { invitations: 100, ..layout() };
        let a = l.codes();
        assert_eq!(a, l.codes());
        assert_ne!(a, Layout { seed: 8, ..l }.codes());
        for code in &a {
            assert_eq!(&InvitationCode::parse(code.as_str(), "").expect("parses"), code);
        }
    }

    #[test]
    fn user_ids_match_the_sql_formula() {
        // sha256('1') = 6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b
        assert_eq!(user_id(1), "user-1-6b86b273ff34fce19d6b804e");
    }
}
