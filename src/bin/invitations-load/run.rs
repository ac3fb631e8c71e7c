//! `run`: drives a running service over gRPC with a fixed number of calls in
//! flight, for a time or a count of calls, and reports throughput and latency
//! percentiles per RPC. Calls name only what `seed` wrote (see `plan`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use invitations::domain::code::InvitationCode;
use invitations::pb;
use rand::Rng;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};

use crate::plan::{Layout, Trees, user_id};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rpc {
    /// Redeem seeded codes, each once (see --trees, --redeem-from).
    Redeem,
    /// Reserve a use of seeded codes, each once (as Redeem picks them).
    Reserve,
    /// CheckCode of a random seeded code.
    Check,
    /// ListForUser, first page of 50, of a random owner.
    List,
    /// Mint --mint-size invitations for a random owner.
    Mint,
    /// Mint --mint-size unowned invitations per call (use 10,000, the maximum).
    MintBulk,
    /// GetInviteGraph of a random member: its ancestors and first page of invitees.
    GraphMember,
    /// GetInviteGraph of root 1: its counts and first page of direct invitees.
    GraphRoot,
    /// 35% CheckCode, 35% ListForUser, 25% Redeem, 5% Mint.
    Mix,
    /// RecordConversion of --conversion-kind for members "<--invitee-prefix>-<m>",
    /// each once: the n-th call (from --redeem-from, up to --members) takes
    /// member m = the n-th of a fixed scattered order of 1..=--members (as
    /// pgbench's random members, not neighbours in the index).
    Convert,
    /// JoinWaitlist of new applicants "<--invitee-prefix>-<n>", n counting up
    /// from --redeem-from.
    Join,
    /// GetWaitlistEntry (with its position) of a random applicant
    /// "<--applicant-prefix>-<1..=--entries>".
    WaitlistGet,
    /// grpc.health.v1.Health/Check of the whole server: no database work,
    /// the gRPC floor every call pays (docs/performance.md).
    Health,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub layout: Layout,
    /// What to call.
    #[arg(long, value_enum)]
    pub rpc: Rpc,
    /// The service's gRPC address.
    #[arg(long, env = "LOAD_TARGET", default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Bearer token for the service's --caller-tokens (needs the admin scope for Mint).
    #[arg(long, env = "LOAD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Calls in flight at any time.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// HTTP/2 connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// How long to measure (after --warmup).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Calls made before measuring starts; not reported.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Stop after this many calls instead (no warm-up).
    #[arg(long)]
    pub count: Option<u64>,
    /// Which owners' invitations Redeem spends.
    #[arg(long, value_enum, default_value_t = Trees::Any)]
    pub trees: Trees,
    /// The first redeem of this run (runs on one database must not overlap:
    /// a code redeemed by an earlier run is refused).
    #[arg(long, default_value_t = 0)]
    pub redeem_from: i64,
    /// Invitees are new members named "<prefix>-<n>".
    #[arg(long, default_value = "invitee")]
    pub invitee_prefix: String,
    /// Invitations per Mint call.
    #[arg(long, default_value_t = 10)]
    pub mint_size: u32,
    /// The kind Convert records (one of the service's --conversion-kinds).
    #[arg(long, default_value = "activated")]
    pub conversion_kind: String,
    /// Entries in the line WaitlistGet reads from (applicants
    /// "<--applicant-prefix>-1" … "-<N>").
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: i64,
    #[arg(long, default_value = "seed")]
    pub applicant_prefix: String,
}

/// What one call was, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Call {
    Redeem,
    Reserve,
    CheckCode,
    ListForUser,
    Mint,
    GetInviteGraph,
    RecordConversion,
    JoinWaitlist,
    GetWaitlistEntry,
    HealthCheck,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Redeem => "Redeem",
            Call::Reserve => "Reserve",
            Call::CheckCode => "CheckCode",
            Call::ListForUser => "ListForUser",
            Call::Mint => "Mint",
            Call::GetInviteGraph => "GetInviteGraph",
            Call::RecordConversion => "RecordConversion",
            Call::JoinWaitlist => "JoinWaitlist",
            Call::GetWaitlistEntry => "GetWaitlistEntry",
            Call::HealthCheck => "HealthCheck",
        }
    }
}

struct Shared {
    args: RunArgs,
    codes: Vec<InvitationCode>,
    next_redeem: AtomicI64,
    started: AtomicU64,
    clients: Vec<Grpc<Channel>>,
}

#[derive(Default)]
struct Tally {
    /// Latencies of successful calls in nanoseconds, by call.
    latencies: BTreeMap<Call, Vec<u64>>,
    /// Failed calls by call and gRPC code, with one message as an example.
    errors: BTreeMap<(Call, i32), (u64, String)>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let codes = match args.rpc {
        Rpc::Redeem | Rpc::Reserve | Rpc::Check | Rpc::Mix => args.layout.codes(),
        _ => Vec::new(),
    };
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = Endpoint::from_shared(args.target.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.target))?;
        clients.push(Grpc::new(channel).max_decoding_message_size(64 << 20));
    }
    let shared = Arc::new(Shared {
        next_redeem: AtomicI64::new(args.redeem_from),
        started: AtomicU64::new(0),
        codes,
        clients,
        args,
    });
    let args = &shared.args;
    let begin = Instant::now();
    let (measure_from, deadline) = match args.count {
        Some(_) => (begin, None),
        None => (begin + args.warmup, Some(begin + args.warmup + args.duration)),
    };
    let workers: Vec<_> =
        (0..args.concurrency.max(1)).map(|w| tokio::spawn(worker(shared.clone(), w, measure_from, deadline))).collect();
    let mut tally = Tally::default();
    for worker in workers {
        let t = worker.await?;
        for (call, mut l) in t.latencies {
            tally.latencies.entry(call).or_default().append(&mut l);
        }
        for (key, (n, example)) in t.errors {
            let e = tally.errors.entry(key).or_insert((0, example));
            e.0 += n;
        }
    }
    let seconds = Instant::now().duration_since(measure_from).as_secs_f64();
    report(&shared.args, &mut tally, seconds, shared.next_redeem.load(Ordering::Relaxed));
    Ok(())
}

async fn worker(shared: Arc<Shared>, w: usize, measure_from: Instant, deadline: Option<Instant>) -> Tally {
    let args = &shared.args;
    let mut client = shared.clients[w % shared.clients.len()].clone();
    let mut tally = Tally::default();
    loop {
        if let Some(count) = args.count
            && shared.started.fetch_add(1, Ordering::Relaxed) >= count
        {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let Some(call) = pick(&shared) else { break };
        let start = Instant::now();
        let result = call.send(&shared, &mut client).await;
        let end = Instant::now();
        if start < measure_from {
            continue;
        }
        match result {
            Ok(()) => tally.latencies.entry(call.kind()).or_default().push(end.duration_since(start).as_nanos() as u64),
            Err(status) => {
                let e =
                    tally.errors.entry((call.kind(), status.code() as i32)).or_insert((0, status.message().to_owned()));
                e.0 += 1;
            }
        }
    }
    tally
}

/// One call to make, with what it needs.
enum Planned {
    Redeem { n: i64, k: i64 },
    Reserve { k: i64 },
    Check { k: i64 },
    List { owner: i64 },
    Mint { owner: i64 },
    MintBulk,
    Graph { member: i64 },
    Convert { n: i64 },
    Join { n: i64 },
    WaitlistGet { n: i64 },
    Health,
}

fn pick(shared: &Shared) -> Option<Planned> {
    let args = &shared.args;
    let layout = &args.layout;
    let mut rng = rand::rng();
    let owner = |rng: &mut rand::rngs::ThreadRng| layout.owner_of(rng.random_range(0..layout.invitations.max(1)));
    let redeem = || {
        let n = shared.next_redeem.fetch_add(1, Ordering::Relaxed);
        layout.redeem_index(args.trees, n).map(|k| Planned::Redeem { n, k })
    };
    Some(match args.rpc {
        Rpc::Redeem => redeem()?,
        Rpc::Reserve => match redeem()? {
            Planned::Redeem { k, .. } => Planned::Reserve { k },
            other => other,
        },
        Rpc::Check => Planned::Check { k: rng.random_range(0..layout.invitations) },
        Rpc::List => Planned::List { owner: owner(&mut rng) },
        Rpc::Mint => Planned::Mint { owner: owner(&mut rng) },
        Rpc::MintBulk => Planned::MintBulk,
        Rpc::GraphMember => Planned::Graph { member: rng.random_range(1..=layout.members) },
        Rpc::GraphRoot => Planned::Graph { member: 1 },
        Rpc::Convert => {
            let n = shared.next_redeem.fetch_add(1, Ordering::Relaxed);
            if n > layout.members {
                return None;
            }
            Planned::Convert { n: scatter(n, layout.members) }
        }
        Rpc::Join => Planned::Join { n: shared.next_redeem.fetch_add(1, Ordering::Relaxed) },
        Rpc::WaitlistGet => Planned::WaitlistGet { n: rng.random_range(1..=args.entries.max(1)) },
        Rpc::Health => Planned::Health,
        Rpc::Mix => match rng.random_range(0..100) {
            0..35 => Planned::Check { k: rng.random_range(0..layout.invitations) },
            35..70 => Planned::List { owner: owner(&mut rng) },
            70..95 => redeem()?,
            _ => Planned::Mint { owner: owner(&mut rng) },
        },
    })
}

impl Planned {
    fn kind(&self) -> Call {
        match self {
            Planned::Redeem { .. } => Call::Redeem,
            Planned::Reserve { .. } => Call::Reserve,
            Planned::Check { .. } => Call::CheckCode,
            Planned::List { .. } => Call::ListForUser,
            Planned::Mint { .. } | Planned::MintBulk => Call::Mint,
            Planned::Graph { .. } => Call::GetInviteGraph,
            Planned::Convert { .. } => Call::RecordConversion,
            Planned::Join { .. } => Call::JoinWaitlist,
            Planned::WaitlistGet { .. } => Call::GetWaitlistEntry,
            Planned::Health => Call::HealthCheck,
        }
    }

    async fn send(&self, shared: &Shared, client: &mut Grpc<Channel>) -> Result<(), tonic::Status> {
        let args = &shared.args;
        let token = args.token.as_deref();
        match *self {
            Planned::Redeem { n, k } => {
                let code = shared.codes[k as usize].as_str().to_owned();
                let invitee_id = format!("{}-{n}", args.invitee_prefix);
                let request = pb::RedeemRequest { code, invitee_id, ..Default::default() };
                unread(client, "/invitations.v1.InvitationService/Redeem", authorized(request, token)).await
            }
            Planned::Reserve { k } => {
                let code = shared.codes[k as usize].as_str().to_owned();
                let request = pb::ReserveRequest { code, ..Default::default() };
                unread(client, "/invitations.v1.InvitationService/Reserve", authorized(request, token)).await
            }
            Planned::Check { k } => {
                let code = shared.codes[k as usize].as_str().to_owned();
                unread(
                    client,
                    "/invitations.v1.InvitationService/CheckCode",
                    authorized(pb::CheckCodeRequest { code, ..Default::default() }, token),
                )
                .await
            }
            Planned::List { owner } => {
                let request = pb::ListForUserRequest { user_id: user_id(owner), page_size: 50, ..Default::default() };
                unread(client, "/invitations.v1.InvitationService/ListForUser", authorized(request, token)).await
            }
            Planned::Mint { owner } => {
                let user_ids = vec![user_id(owner)];
                let request =
                    pb::MintRequest { user_ids, per_user: args.mint_size, label: "load".into(), ..Default::default() };
                unread(client, "/invitations.v1.InvitationService/Mint", authorized(request, token)).await
            }
            Planned::MintBulk => {
                let request =
                    pb::MintRequest { unowned_count: args.mint_size, label: "load".into(), ..Default::default() };
                unread(client, "/invitations.v1.InvitationService/Mint", authorized(request, token)).await
            }
            Planned::Graph { member } => {
                let request = pb::GetInviteGraphRequest { user_id: user_id(member), ..Default::default() };
                unread(client, "/invitations.v1.InvitationService/GetInviteGraph", authorized(request, token)).await
            }
            Planned::Convert { n } => {
                let request = pb::RecordConversionRequest {
                    user_id: format!("{}-{n}", args.invitee_prefix),
                    kind: args.conversion_kind.clone(),
                    ..Default::default()
                };
                unread(client, "/invitations.v1.InvitationService/RecordConversion", authorized(request, token)).await
            }
            Planned::Join { n } => {
                let request = pb::JoinWaitlistRequest {
                    applicant_id: format!("{}-{n}", args.invitee_prefix),
                    ..Default::default()
                };
                unread(client, "/invitations.v1.InvitationService/JoinWaitlist", authorized(request, token)).await
            }
            Planned::WaitlistGet { n } => {
                let request = pb::GetWaitlistEntryRequest {
                    applicant_id: format!("{}-{n}", args.applicant_prefix),
                    ..Default::default()
                };
                unread(client, "/invitations.v1.InvitationService/GetWaitlistEntry", authorized(request, token)).await
            }
            Planned::Health => {
                let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
                unread(client, "/grpc.health.v1.Health/Check", authorized(request, token)).await
            }
        }
    }
}

/// The n-th (1-based) of 1..=len in a fixed scattered order: multiplying by
/// a prime is a bijection modulo any len it does not divide.
fn scatter(n: i64, len: i64) -> i64 {
    const PRIME: i128 = 611_953;
    if len <= 1 || len % PRIME as i64 == 0 {
        return n;
    }
    (((n - 1) as i128 * PRIME).rem_euclid(len as i128)) as i64 + 1
}

/// An answer the load generator does not read: prost skips every field of
/// it, as pgbench throws away the rows it receives, so the client's own CPU
/// (on the same cores as the service and Postgres) stays small. Only the
/// status counts.
#[derive(Clone, PartialEq, prost::Message)]
struct Unread {}

/// Calls `path` (`/invitations.v1.InvitationService/<method>`), reading only the status.
async fn unread<M: prost::Message + Send + Sync + 'static>(
    client: &mut Grpc<Channel>,
    path: &'static str,
    request: tonic::Request<M>,
) -> Result<(), tonic::Status> {
    client.ready().await.map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<M, Unread>::default();
    client.unary(request, http::uri::PathAndQuery::from_static(path), codec).await?;
    Ok(())
}

fn authorized<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The value at quantile `q` of sorted latencies, in milliseconds.
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index] as f64 / 1e6
}

/// A table for people and one `result` line per call for scripts:
/// `result rpc=<run> call=<Call> calls= errors= seconds= per_second= p50_ms= p99_ms= p999_ms= max_ms=`.
fn report(args: &RunArgs, tally: &mut Tally, seconds: f64, next_redeem: i64) {
    let rpc = clap::ValueEnum::to_possible_value(&args.rpc).map(|v| v.get_name().to_owned()).unwrap_or_default();
    println!("{rpc}: {} in flight over {} connections, {seconds:.1} s measured", args.concurrency, args.connections);
    println!(
        "{:<16} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "call", "ok", "errors", "calls/s", "p50 ms", "p99 ms", "p999 ms", "max ms"
    );
    let mut calls: Vec<Call> = tally.latencies.keys().copied().collect();
    calls.extend(tally.errors.keys().map(|(c, _)| *c));
    calls.sort();
    calls.dedup();
    let mut total = 0;
    for call in calls {
        let l = tally.latencies.entry(call).or_default();
        l.sort_unstable();
        let errors: u64 = tally.errors.iter().filter(|((c, _), _)| *c == call).map(|(_, (n, _))| n).sum();
        let per_second = l.len() as f64 / seconds;
        total += l.len();
        let (p50, p99, p999) = (quantile_ms(l, 0.5), quantile_ms(l, 0.99), quantile_ms(l, 0.999));
        let max = quantile_ms(l, 1.0);
        println!(
            "{:<16} {:>9} {errors:>7} {per_second:>10.1} {p50:>9.2} {p99:>9.2} {p999:>9.2} {max:>9.2}",
            call.name(),
            l.len()
        );
        println!(
            "result rpc={rpc} call={} calls={} errors={errors} seconds={seconds:.3} per_second={per_second:.1} \
             p50_ms={p50:.3} p99_ms={p99:.3} p999_ms={p999:.3} max_ms={max:.3}",
            call.name(),
            l.len()
        );
    }
    if tally.latencies.len() > 1 {
        println!("all: {total} calls, {:.1} calls/s", total as f64 / seconds);
        println!("result rpc={rpc} call=all calls={total} per_second={:.1}", total as f64 / seconds);
    }
    if matches!(args.rpc, Rpc::Redeem | Rpc::Reserve | Rpc::Mix | Rpc::Convert | Rpc::Join) {
        // Where a later run on this database starts so it spends fresh codes
        // (warm-up calls included, so not just redeem_from + calls).
        println!("result rpc={rpc} call=next redeem_from={}", next_redeem);
    }
    for ((call, code), (n, example)) in &tally.errors {
        println!("errors: {n} × {} {:?} (e.g. {example:?})", call.name(), tonic::Code::from_i32(*code));
    }
}

#[cfg(test)]
mod tests {
    use super::scatter;

    #[test]
    fn scatter_is_a_permutation() {
        for len in [1, 2, 1000, 2000, 4096] {
            let mut seen: Vec<i64> = (1..=len).map(|n| scatter(n, len)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (1..=len).collect::<Vec<_>>(), "len {len}");
        }
        assert_ne!(scatter(2, 1000), 2, "scattered, not in order");
    }
}
