//! GetInviteGraph (a member, its ancestors, a page of its subtree in
//! depth-first order, its counts) and the forest walk. Reads only; the paths
//! make each one a few index probes (docs/design.md, "Graph storage").

use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::domain::error::Error;
use crate::domain::{MAX_GRAPH_DEPTH, Member, UserId};
use crate::store::replicas::ReadFrom;
use crate::store::{graph, tree};

use super::{Invitations, bad_page_token, public_view, read_pooled};

pub struct GraphQuery {
    pub user: UserId,
    pub page_size: u32,
    pub page_token: String,
    /// Levels of the subtree to include, at least 1 (clamped to
    /// `MAX_GRAPH_DEPTH`, which means all of them).
    pub max_depth: u32,
    /// Hidden members as anonymous placeholders.
    pub public_view: bool,
}

pub struct GraphView {
    pub member: Member,
    /// Root first.
    pub ancestors: Vec<Member>,
    /// One page of the subtree, depth-first.
    pub descendants: Vec<Member>,
    pub next_page_token: String,
    /// Members below `member`, all depths.
    pub descendant_count: i64,
    /// Direct invitees of `member`.
    pub invitee_count: i64,
    pub public_view: bool,
}

/// Members per query while walking the forest.
const WALK_CHUNK: i64 = 1000;

pub struct WalkQuery {
    /// Levels below each root; `None`: whole trees.
    pub max_depth: Option<u32>,
    pub public_view: bool,
    /// Leave out roots that have invited nobody.
    pub omit_singletons: bool,
}

/// The longest path to include `depth` levels below a member whose path has
/// `len` ids; `None` when that is the whole subtree.
fn max_len(len: usize, depth: u32) -> Option<usize> {
    (depth < MAX_GRAPH_DEPTH).then(|| len + depth as usize)
}

impl Invitations {
    #[tracing::instrument(name = "db.graph", skip_all, fields(db.system = "postgresql"))]
    pub async fn graph(&self, query: GraphQuery, read: ReadFrom) -> Result<GraphView, Error> {
        let mut scope = [b"graph\0".as_slice(), query.user.as_str().as_bytes(), b"\0"].concat();
        scope.extend_from_slice(&query.max_depth.to_be_bytes());
        scope.push(u8::from(query.public_view));
        let cursor = if query.page_token.is_empty() {
            None
        } else {
            let cursor = self.page_tokens.decode(&query.page_token, &scope).ok_or_else(bad_page_token)?;
            let bytes: [u8; 8] = cursor.try_into().map_err(|_| bad_page_token())?;
            Some(i64::from_be_bytes(bytes))
        };
        // From a standby, a member it has not replayed yet is asked of the
        // primary (`read_pooled`): a sign-up a moment ago is never NOT_FOUND.
        read_pooled!(self, read, pool => self.graph_from(pool, &query, &scope, cursor))
    }

    async fn graph_from(
        &self,
        pool: &PgPool,
        query: &GraphQuery,
        scope: &[u8],
        cursor: Option<i64>,
    ) -> Result<GraphView, Error> {
        let mut conn = pool.acquire().await?;
        let mut ancestors = graph::lineage(&mut conn, query.user.as_str()).await?;
        let member = match ancestors.pop() {
            // The public view does not even confirm that a hidden member exists.
            Some(m) if !(query.public_view && m.hidden) => m,
            _ => return Err(Error::NotFound { what: "member", field: "user_id" }),
        };
        let (descendant_count, invitee_count) = graph::counts(&mut conn, member.id).await?;

        let limit = i64::from(query.page_size) + 1;
        let resume_at = match cursor {
            Some(id) => Some(graph::path_of(&mut conn, id).await?.ok_or_else(bad_page_token)?),
            None => None,
        };
        let mut descendants = if query.max_depth == 1 {
            // Direct invitees only: one range of the inviter index.
            let after = resume_at.unwrap_or_else(|| member.path.clone());
            graph::invitees_page(&mut conn, &member, &after, limit).await?
        } else {
            let max_len = max_len(member.path.len(), query.max_depth);
            let first = tree::after(&member.path, None);
            // A member moved away since the last page must not pull the range
            // out of this subtree.
            let from = resume_at.map_or(first.clone(), |path| tree::after(&path, max_len).max(first));
            let to = tree::subtree_end(&member.path);
            let max_len = max_len.map(|l| i32::try_from(l).unwrap_or(i32::MAX));
            graph::page(&mut conn, &from, &to, max_len, limit).await?
        };
        let next_page_token = if descendants.len() > query.page_size as usize {
            descendants.truncate(query.page_size as usize);
            descendants.last().map(|m| self.page_tokens.encode(scope, &m.id.to_be_bytes())).unwrap_or_default()
        } else {
            String::new()
        };
        let mut view = GraphView {
            member,
            ancestors,
            descendants,
            next_page_token,
            descendant_count,
            invitee_count,
            public_view: query.public_view,
        };
        if query.public_view {
            let all = std::iter::once(&mut view.member).chain(&mut view.ancestors).chain(&mut view.descendants);
            all.for_each(|m| self.placeholders.publish(m));
        }
        Ok(view)
    }

    /// Every member, tree by tree (roots by id), each tree depth-first:
    /// streamed in chunks, each chunk its own snapshot (no transaction is
    /// held open while a slow client reads). A subtree moved by Reparent
    /// during the walk can appear twice or not at all. A chunk a standby
    /// fails (a recovery conflict, the standby gone) is read again from the
    /// primary, which serves the rest of the walk: the stream goes on from
    /// the last member sent.
    pub fn walk_forest(&self, query: WalkQuery, read: ReadFrom) -> mpsc::Receiver<Result<Member, Error>> {
        let (tx, rx) = mpsc::channel(WALK_CHUNK as usize);
        let (pool, source) = self.replicas.read_pool(read);
        let source = Source { pool: pool.clone(), standby: source != crate::store::replicas::Source::Primary };
        let replicas = self.replicas.clone();
        let placeholders = self.placeholders.clone();
        tokio::spawn(async move {
            if let Err(e) = walk(source, &replicas, placeholders, query, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }
}

/// Where the walk reads its chunks.
struct Source {
    pool: PgPool,
    standby: bool,
}

/// One chunk of the walk from `source`; a standby's failure moves the walk
/// to the primary and reads the chunk there.
async fn chunk(
    source: &mut Source,
    replicas: &crate::store::replicas::Replicas,
    from: &[i64],
    to: &[i64],
    len: Option<i32>,
) -> Result<Vec<Member>, Error> {
    let read = |pool: PgPool| async move {
        let mut conn = pool.acquire().await?;
        graph::page(&mut conn, from, to, len, WALK_CHUNK).await
    };
    match read(source.pool.clone()).await {
        Err(e) if source.standby && super::standby_failed(&e) => {
            replicas.count_fallback("standby_error");
            tracing::info!(error = %e, "a standby failed a chunk of the forest walk; the primary goes on");
            *source = Source { pool: replicas.primary().clone(), standby: false };
            Ok(read(source.pool.clone()).await?)
        }
        other => Ok(other?),
    }
}

async fn walk(
    mut source: Source,
    replicas: &crate::store::replicas::Replicas,
    placeholders: public_view::Placeholders,
    query: WalkQuery,
    out: &mpsc::Sender<Result<Member, Error>>,
) -> Result<(), Error> {
    let wanted_len = query.max_depth.and_then(|d| max_len(1, d));
    // Telling a singleton root from one with invitees needs the next row, so
    // a roots-only walk that omits singletons also reads the first level.
    let read_len = match wanted_len {
        Some(1) if query.omit_singletons => Some(2),
        l => l,
    };
    let to = tree::subtree_end(&[]);
    let mut from = Vec::new();
    let mut pending_root: Option<Member> = None;
    loop {
        let len_sql = read_len.map(|l| i32::try_from(l).unwrap_or(i32::MAX));
        let rows = chunk(&mut source, replicas, &from, &to, len_sql).await?;
        let done = (rows.len() as i64) < WALK_CHUNK;
        if let Some(last) = rows.last() {
            from = tree::after(&last.path, read_len);
        }
        for m in rows {
            if query.omit_singletons {
                if m.path.len() == 1 {
                    pending_root = Some(m);
                    continue;
                }
                if let Some(root) = pending_root.take()
                    && !emit(out, &placeholders, query.public_view, root).await
                {
                    return Ok(());
                }
            }
            if wanted_len.is_some_and(|l| m.path.len() > l) {
                continue;
            }
            if !emit(out, &placeholders, query.public_view, m).await {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
    }
}

/// Sends one member (as the public sees it, if asked); false when the
/// client went away.
async fn emit(
    out: &mpsc::Sender<Result<Member, Error>>,
    placeholders: &public_view::Placeholders,
    public_view: bool,
    mut m: Member,
) -> bool {
    if public_view {
        placeholders.publish(&mut m);
    }
    out.send(Ok(m)).await.is_ok()
}
