//! The invite graph against a simple in-test model on a generated forest
//! (a wide root, a 50-deep chain, random heavy-tailed fan-out, singletons),
//! built by redeems in random order (so trees merge), then changed by
//! reparents: ancestors, depth, counts and depth-first pages checked for
//! every member, cycles refused.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use invitations::pb;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::helpers::{TestApp, assert_error, member, wait_until};

/// Who invited whom; `None` for roots.
#[derive(Default, Clone)]
struct Model {
    parent: BTreeMap<String, Option<String>>,
}

impl Model {
    fn chain(&self, user: &str) -> Vec<String> {
        let mut chain = Vec::new();
        let mut at = self.parent[user].clone();
        while let Some(p) = at {
            at = self.parent[&p].clone();
            chain.push(p);
        }
        chain.reverse();
        chain
    }

    fn depth(&self, user: &str) -> u32 {
        self.chain(user).len() as u32
    }

    fn children(&self, user: &str) -> Vec<&String> {
        self.parent.iter().filter(|(_, p)| p.as_deref() == Some(user)).map(|(c, _)| c).collect()
    }

    /// (user, inviter, depth) of everyone below `user`, at most `levels` down.
    fn below(&self, user: &str, levels: u32) -> BTreeSet<(String, String, u32)> {
        let base = self.depth(user);
        self.parent
            .iter()
            .filter_map(|(u, p)| {
                let chain = self.chain(u);
                let d = chain.len() as u32;
                (chain.iter().any(|a| a == user) && d - base <= levels)
                    .then(|| (u.clone(), p.clone().unwrap_or_default(), d))
            })
            .collect()
    }

    fn is_below(&self, user: &str, ancestor: &str) -> bool {
        self.chain(user).iter().any(|a| a == ancestor)
    }
}

fn ids(nodes: &[pb::MemberNode]) -> Vec<String> {
    nodes.iter().map(|n| n.user_id.clone()).collect()
}

fn triples(nodes: &[pb::MemberNode]) -> BTreeSet<(String, String, u32)> {
    nodes.iter().map(|n| (n.user_id.clone(), n.inviter_id.clone(), n.depth)).collect()
}

/// Each node's inviter is the nearest node above it one level up (or `top`
/// for the first level): the list is a depth-first pre-order of a tree.
#[track_caller]
fn assert_preorder(top: Option<(&str, u32)>, nodes: &[pb::MemberNode]) {
    let mut stack: Vec<(&str, u32)> = top.into_iter().collect();
    for n in nodes {
        while stack.last().is_some_and(|&(_, d)| d >= n.depth) {
            stack.pop();
        }
        match stack.last() {
            Some(&(parent, d)) => {
                assert_eq!((parent, d + 1), (n.inviter_id.as_str(), n.depth), "{} out of order", n.user_id)
            }
            None => assert!(n.inviter_id.is_empty() && n.depth == 0, "{} should be a root", n.user_id),
        }
        stack.push((&n.user_id, n.depth));
    }
}

async fn descendants(app: &TestApp, user: &str, max_depth: i32, page_size: i32) -> Vec<pb::MemberNode> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .graph(pb::GetInviteGraphRequest {
                user_id: user.into(),
                max_depth,
                page_size,
                page_token,
                ..Default::default()
            })
            .await
            .expect("graph page");
        assert!(page.descendants.len() <= page_size as usize);
        all.extend(page.descendants);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Every member's node, ancestors and direct invitees; whole subtrees in
/// pages for a few.
async fn check(app: &TestApp, model: &Model, deep: &[&str]) {
    for user in model.parent.keys() {
        let g = app
            .graph(pb::GetInviteGraphRequest { user_id: user.clone(), page_size: 500, ..Default::default() })
            .await
            .expect("graph");
        let m = g.member.expect("member");
        assert_eq!(m.inviter_id, model.parent[user].clone().unwrap_or_default(), "{user}");
        assert_eq!(m.depth, model.depth(user), "{user}");
        assert_eq!(ids(&g.ancestors), model.chain(user), "ancestors of {user}");
        assert_eq!(m.direct_invitee_count, model.children(user).len() as u64, "invitees of {user}");
        assert_eq!(m.descendant_count, model.below(user, u32::MAX).len() as u64, "descendants of {user}");
        assert_eq!(triples(&g.descendants), model.below(user, 1), "direct invitees of {user}");
    }
    for user in deep {
        let depth = model.depth(user);
        for (levels, page_size) in [(2, 3), (10_000, 7)] {
            let got = descendants(app, user, levels, page_size).await;
            assert_eq!(got.len(), triples(&got).len(), "no repeats under {user}");
            assert_eq!(triples(&got), model.below(user, levels as u32), "{levels} levels under {user}");
            assert_preorder(Some((user, depth)), &got);
        }
    }
}

/// Builds the planned forest: mints for each inviter, then redeems every
/// edge in random order (an invitee may already have invitees: trees merge).
async fn build(app: &TestApp, edges: &[(String, String)], rng: &mut StdRng) {
    let mut codes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut per_inviter: BTreeMap<&str, u32> = BTreeMap::new();
    for (parent, _) in edges {
        *per_inviter.entry(parent).or_default() += 1;
    }
    for (parent, n) in per_inviter {
        let minted = app.mint_for(parent, n).await;
        codes.insert(parent.to_owned(), minted.into_iter().map(|i| i.code).collect());
    }
    let mut order: Vec<_> = edges.iter().collect();
    order.shuffle(rng);
    for (parent, child) in order {
        let code = codes.get_mut(parent).and_then(Vec::pop).expect("a code per edge");
        app.redeem(&code, child).await.unwrap_or_else(|e| panic!("{child} joins under {parent}: {e:?}"));
    }
}

#[tokio::test]
async fn the_graph_matches_a_model_of_a_generated_forest_before_and_after_reparents() {
    let app = TestApp::spawn_with(&["--graph-fold-interval", "20ms"]).await;
    let mut rng = StdRng::seed_from_u64(0x1d_2024);
    let mut model = Model::default();
    let mut edges: Vec<(String, String)> = Vec::new();
    let mut add = |model: &mut Model, parent: Option<&str>, child: String| {
        if let Some(p) = parent {
            edges.push((p.to_owned(), child.clone()));
        }
        model.parent.insert(child, parent.map(str::to_owned));
    };
    for root in ["wide", "chain-0", "mixed", "lonely-1", "lonely-2"] {
        add(&mut model, None, root.to_owned());
    }
    for i in 0..30 {
        add(&mut model, Some("wide"), format!("w{i:02}"));
    }
    for i in 1..50 {
        add(&mut model, Some(&format!("chain-{}", i - 1)), format!("chain-{i}"));
    }
    // Heavy-tailed: early members are far likelier inviters.
    let mut pool: Vec<String> = vec!["mixed".into(), "w00".into(), "chain-10".into()];
    for i in 0..100 {
        let pick = ((rng.random::<f64>().powi(3)) * pool.len() as f64) as usize;
        let parent = pool[pick.min(pool.len() - 1)].clone();
        let child = format!("m{i:03}");
        add(&mut model, Some(&parent), child.clone());
        pool.push(child);
    }
    // Members that joined by other routes and invited nobody.
    app.register(vec![member("lonely-1", None, None), member("lonely-2", None, Some(true))]).await.expect("register");
    build(&app, &edges, &mut rng).await;

    let deep = ["wide", "chain-0", "chain-20", "mixed", "w00", "lonely-1"];
    check(&app, &model, &deep).await;

    // Reparents: leaves, big subtrees, across trees, to a root and back.
    let moves = [
        ("w03", Some("chain-49")),
        ("chain-25", Some("w07")),
        ("w00", None),
        ("mixed", Some("lonely-1")),
        ("chain-10", Some("wide")),
        ("w00", Some("m005")),
    ];
    for (user, to) in moves {
        if let Some(to) = to {
            assert!(!model.is_below(to, user) && to != user, "planned move {user} -> {to} is no cycle");
        }
        let r = app
            .reparent(pb::ReparentRequest {
                user_id: user.into(),
                new_inviter_id: to.unwrap_or_default().into(),
                make_root: to.is_none(),
                reason: "fix".into(),
                reparented_by: "ops".into(),
            })
            .await
            .unwrap_or_else(|e| panic!("move {user}: {e:?}"));
        assert_eq!(r.moved_count, 1 + model.below(user, u32::MAX).len() as u64, "moved with {user}");
        model.parent.insert(user.to_owned(), to.map(str::to_owned));
    }
    // Cycles: under itself, under a descendant (deep and direct).
    let cycles = [
        ("chain-0", "chain-0"),
        ("chain-0", "chain-9"),
        ("chain-25", "chain-40"),
        ("wide", "chain-10"),
        ("m005", "w00"),
    ];
    for (user, to) in cycles {
        assert!(to == user || model.is_below(to, user), "{to} is below {user}");
        let err = app
            .reparent(pb::ReparentRequest { user_id: user.into(), new_inviter_id: to.into(), ..Default::default() })
            .await
            .expect_err("a cycle");
        assert_error(&err, Code::FailedPrecondition, "INVITE_CYCLE", None);
    }
    assert_eq!(app.count("reparents").await, moves.len() as i64);

    check(&app, &model, &deep).await;
    // The folded counters agree with the deltas they replaced.
    wait_until(Duration::from_secs(10), "the count deltas to be folded", || async {
        app.count("member_count_deltas").await == 0
    })
    .await;
    check(&app, &model, &[]).await;

    // The whole forest, streamed: every member once, each tree depth-first.
    let forest = app.walk(pb::WalkInviteForestRequest::default()).await.expect("walk");
    let everyone: BTreeSet<_> = model.parent.keys().cloned().collect();
    assert_eq!(forest.len(), everyone.len());
    assert_eq!(ids(&forest).into_iter().collect::<BTreeSet<_>>(), everyone);
    assert_preorder(None, &forest);
    let roots: Vec<_> = model.parent.iter().filter(|(_, p)| p.is_none()).map(|(u, _)| u.clone()).collect();
    let walked_roots = app.walk(pb::WalkInviteForestRequest { max_depth: Some(0), ..Default::default() }).await;
    assert_eq!(
        ids(&walked_roots.expect("roots")).into_iter().collect::<BTreeSet<_>>(),
        roots.iter().cloned().collect()
    );
    let with_invitees: BTreeSet<_> = roots.iter().filter(|r| !model.children(r).is_empty()).cloned().collect();
    for max_depth in [Some(0), Some(1), None] {
        let walked = app
            .walk(pb::WalkInviteForestRequest { max_depth, omit_singletons: true, ..Default::default() })
            .await
            .expect("walk");
        let walked_roots: BTreeSet<_> = walked.iter().filter(|n| n.depth == 0).map(|n| n.user_id.clone()).collect();
        assert_eq!(walked_roots, with_invitees, "omit_singletons, max_depth {max_depth:?}");
        assert!(walked.iter().all(|n| max_depth.is_none_or(|d| n.depth <= d)));
        assert_preorder(None, &walked);
    }
}
