//! CreateMemberInvitation (issue 18): each operator limit at its edge, with
//! the limit named in a PreconditionFailure (and RetryInfo for the rate),
//! the allowed attribute keys, the `member` scope, and the rate and unspent
//! limits holding under concurrent creates from two replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use invitations::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Options, TestApp, assert_error, bearer, member};

const LIMITS: &[&str] = &[
    "--member-invitations",
    "true",
    "--member-max-uses",
    "3",
    "--member-max-ttl",
    "7d",
    "--member-min-age",
    "30d",
    "--member-rate",
    "2",
    "--member-rate-period",
    "1h",
    "--member-max-unspent",
    "3",
    "--member-attribute-keys",
    "role,team",
];

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn days(n: i64) -> i64 {
    n * 86_400
}

fn ttl(secs: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: secs, nanos: 0 })
}

fn request(user: &str, max_uses: u32, ttl_secs: Option<i64>) -> pb::CreateMemberInvitationRequest {
    pb::CreateMemberInvitationRequest {
        user_id: user.into(),
        max_uses,
        ttl: ttl_secs.and_then(ttl),
        ..Default::default()
    }
}

async fn create(app: &TestApp, r: pb::CreateMemberInvitationRequest) -> Result<pb::Invitation, tonic::Status> {
    app.client.clone().create_member_invitation(r).await.map(|r| r.into_inner().invitation.expect("the invitation"))
}

/// The limit a refusal names, after checking it is MEMBER_LIMIT.
#[track_caller]
fn limit_of(status: &tonic::Status) -> String {
    assert_error(status, Code::FailedPrecondition, "MEMBER_LIMIT", None);
    let failure = status.get_details_precondition_failure().expect("PreconditionFailure");
    failure.violations[0].r#type.clone()
}

#[tokio::test]
async fn off_by_default() {
    let app = TestApp::spawn().await;
    app.register(vec![member("ana", Some(now() - days(100)), None)]).await.expect("register");
    let status = create(&app, request("ana", 1, None)).await.expect_err("off");
    assert_eq!(limit_of(&status), "MEMBER_INVITATIONS_OFF");
}

#[tokio::test]
async fn each_limit_at_its_edge() {
    let app = TestApp::spawn_with(LIMITS).await;
    let week = days(7);
    // Thirty days of membership, a minute either side.
    app.register(vec![
        member("old", Some(now() - days(30) - 60), None),
        member("young", Some(now() - days(30) + 60), None),
        member("heavy", Some(now() - days(90)), None),
    ])
    .await
    .expect("register");

    let status = create(&app, request("young", 1, Some(week))).await.expect_err("too young");
    assert_eq!(limit_of(&status), "MEMBER_AGE");
    assert_eq!(status.get_details_precondition_failure().expect("pf").violations[0].subject, "--member-min-age");

    // Uses: 3 is the limit.
    let status = create(&app, request("old", 4, Some(week))).await.expect_err("4 uses");
    assert_eq!(limit_of(&status), "MAX_USES");
    // ttl: required, at most 7 days.
    let status = create(&app, request("old", 1, None)).await.expect_err("no ttl");
    assert_eq!(limit_of(&status), "TTL_REQUIRED");
    let status = create(&app, request("old", 1, Some(week + 1))).await.expect_err("too long");
    assert_eq!(limit_of(&status), "MAX_TTL");
    // Attributes: only role and team.
    let mut r = request("old", 3, Some(week));
    r.attributes = BTreeMap::from([("org".to_string(), "acme".to_string())]);
    let status = create(&app, r).await.expect_err("org not allowed");
    assert_error(&status, Code::InvalidArgument, "INVALID_ARGUMENT", Some("attributes.org"));
    assert_eq!(app.count("invitations").await, 0, "no refusal minted anything");

    let mut r = request("old", 3, Some(week));
    r.attributes = BTreeMap::from([("role".to_string(), "friend".to_string())]);
    r.label = "from-ana".into();
    let first = create(&app, r).await.expect("at the edges");
    assert_eq!((first.inviter_id.as_str(), first.max_uses, first.minted_by.as_str()), ("old", 3, "member"));
    assert_eq!(first.attributes.get("role").map(String::as_str), Some("friend"));
    assert!(!first.code.is_empty(), "the member gets the code to share");
    app.redeem(&first.code, "friend-1").await.expect("redeemable");

    // Rate: 2 per hour; the third is refused with when the next is allowed.
    create(&app, request("old", 1, Some(week))).await.expect("second");
    let status = create(&app, request("old", 1, Some(week))).await.expect_err("third within the hour");
    assert_eq!(limit_of(&status), "RATE");
    let retry = status.get_details_retry_info().expect("RetryInfo").retry_delay.expect("a delay");
    assert!(retry > Duration::from_secs(3500) && retry <= Duration::from_secs(3600), "{retry:?}");
    // An hour later (the first moved back by SQL) one more is allowed.
    let pool = app.pool().await;
    sqlx::query("UPDATE invitations SET create_time = create_time - interval '61 minutes' WHERE id = $1::uuid")
        .bind(&first.id)
        .execute(&pool)
        .await
        .expect("age the first");
    create(&app, request("old", 1, Some(week))).await.expect("the window moved on");

    // Unspent: three held (minted by an operator: not counted in the rate).
    app.mint(pb::MintRequest { user_ids: vec!["heavy".into()], per_user: 3, ..Default::default() })
        .await
        .expect("mint");
    let status = create(&app, request("heavy", 1, Some(week))).await.expect_err("holds 3");
    assert_eq!(limit_of(&status), "MAX_UNSPENT");
    let page = app.list(pb::ListForUserRequest { user_id: "heavy".into(), ..Default::default() }).await.expect("list");
    app.redeem(&page.invitations[0].code, "friend-2").await.expect("spend one");
    create(&app, request("heavy", 1, Some(week))).await.expect("holds 2");

    // Privileges off.
    app.privileges(pb::SetInvitePrivilegesRequest { user_id: "heavy".into(), enabled: false, ..Default::default() })
        .await
        .expect("disable");
    let status = create(&app, request("heavy", 1, Some(week))).await.expect_err("disabled");
    assert_eq!(limit_of(&status), "PRIVILEGES");

    let status = create(&app, request("nobody", 1, Some(week))).await.expect_err("unknown");
    assert_error(&status, Code::NotFound, "NOT_FOUND", Some("user_id"));
}

/// 20 concurrent creates for one member over two replicas with `args`:
/// every refusal names `limit`; how many were created (and are stored).
async fn race_creates(args: &[&str], limit: &str) -> i64 {
    let first = TestApp::spawn_with(args).await;
    let extra_args = args.iter().map(|s| s.to_string()).collect();
    let second = TestApp::spawn_opts(Options { extra_args, database_url: Some(first.db.url.clone()) }).await;
    first.register(vec![member("ana", Some(now() - days(10)), None)]).await.expect("register");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let mut client = if i % 2 == 0 { first.client.clone() } else { second.client.clone() };
        tasks.spawn(async move {
            client.create_member_invitation(request("ana", 1, None)).await.map(|_| ()).map_err(|s| {
                s.get_details_precondition_failure().map(|f| f.violations[0].r#type.clone()).unwrap_or_default()
            })
        });
    }
    let mut created = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("task") {
            Ok(()) => created += 1,
            Err(refused) => assert_eq!(refused, limit),
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM invitations WHERE inviter_id = 'ana'")
        .fetch_one(&first.pool().await)
        .await
        .expect("count");
    assert_eq!(stored, created, "what was answered is what is stored");
    created
}

#[tokio::test]
async fn the_rate_holds_across_two_replicas() {
    let args = [
        "--member-invitations",
        "true",
        "--member-rate",
        "3",
        "--member-rate-period",
        "1h",
        "--member-max-unspent",
        "5",
    ];
    assert_eq!(race_creates(&args, "RATE").await, 3, "exactly the rate, whichever replica answered");
}

#[tokio::test]
async fn the_unspent_limit_holds_across_two_replicas() {
    let args = ["--member-invitations", "true", "--member-rate", "100", "--member-max-unspent", "4"];
    assert_eq!(race_creates(&args, "MAX_UNSPENT").await, 4, "exactly the unspent limit, whichever replica answered");
}

#[tokio::test]
async fn the_member_scope_creates_and_nothing_else() {
    let hash = invitations::grpc::auth::token_digest_hex;
    let tokens = format!(
        "product:member:{}, form:signup:{}, ops:admin:{}",
        hash("m-token-0123456789"),
        hash("s-token-0123456789"),
        hash("a-token-0123456789")
    );
    let app = TestApp::spawn_with(&["--caller-tokens", &tokens, "--member-invitations", "true"]).await;
    app.client
        .clone()
        .register_members(bearer(
            pb::RegisterMembersRequest { members: vec![member("ana", Some(now() - days(10)), None)] },
            "a-token-0123456789",
        ))
        .await
        .expect("register");
    let mut client = app.client.clone();
    client.create_member_invitation(bearer(request("ana", 1, None), "m-token-0123456789")).await.expect("member");
    let status = client
        .create_member_invitation(bearer(request("ana", 1, None), "s-token-0123456789"))
        .await
        .expect_err("signup");
    assert_error(&status, Code::PermissionDenied, "PERMISSION_DENIED", None);
    let mint = pb::MintRequest { user_ids: vec!["ana".into()], ..Default::default() };
    let status = client.mint(bearer(mint, "m-token-0123456789")).await.expect_err("member cannot Mint");
    assert_error(&status, Code::PermissionDenied, "PERMISSION_DENIED", None);
}

#[tokio::test]
async fn the_cli_creates_a_member_invitation_and_names_the_limit_it_hits() {
    use crate::admin_cli::{ADMIN, admin, secured, stderr_of_failure, stdout};
    let app = secured(&["--member-invitations", "true", "--member-rate", "1", "--member-attribute-keys", "role"]).await;
    app.client
        .clone()
        .register_members(bearer(pb::RegisterMembersRequest { members: vec![member("ana", None, None)] }, ADMIN))
        .await
        .expect("register");
    let args = ["member-invite", "--user", "ana", "--ttl", "7d", "--attribute", "role=friend"];
    let text = stdout(&admin(&app, Some(ADMIN), &args).await);
    assert!(text.starts_with("Created invitation ") && text.contains("attribute role=friend\n"), "{text}");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM invitations WHERE inviter_id = 'ana' AND minted_by = 'member'")
            .fetch_one(&app.pool().await)
            .await
            .expect("count");
    assert_eq!(stored, 1);
    // The second within the period: the limit, its flag and when to retry.
    let err = stderr_of_failure(&admin(&app, Some(ADMIN), &["member-invite", "--user", "ana"]).await);
    assert!(
        err.contains("[MEMBER_LIMIT]") && err.contains("RATE (--member-rate)") && err.contains("retry in "),
        "{err}"
    );
    let err = stderr_of_failure(
        &admin(&app, Some(ADMIN), &["member-invite", "--user", "ana", "--attribute", "team=x"]).await,
    );
    assert!(err.contains("[INVALID_ARGUMENT]") && err.contains("team"), "{err}");
}

/// Quota grants and member invitations are separate paths, both on: the
/// welcome grant is the service's, the member's own invitation comes on
/// top, and the unspent limit counts unspent invitations of any origin
/// (the two granted ones included).
#[tokio::test]
async fn member_invitations_and_the_welcome_grant_work_together() {
    let app =
        TestApp::spawn_with(&["--welcome-grant", "2", "--member-invitations", "true", "--member-max-unspent", "3"])
            .await;
    app.register(vec![member("ana", Some(now() - days(10)), None)]).await.expect("register");
    let own = create(&app, request("ana", 1, None)).await.expect("the member's own, beside two granted");
    assert_eq!(own.minted_by, "member");
    let err = create(&app, request("ana", 1, None)).await.expect_err("unspent limit");
    assert_eq!(limit_of(&err), "MAX_UNSPENT");
    let page = app.list(pb::ListForUserRequest { user_id: "ana".into(), ..Default::default() }).await.expect("list");
    let mut by: Vec<&str> = page.invitations.iter().map(|i| i.minted_by.as_str()).collect();
    by.sort();
    assert_eq!(by.len(), 3, "{by:?}");
    assert_eq!(by.iter().filter(|b| **b == "member").count(), 1);
    // The invitee who redeems the member's invitation gets its own welcome grant.
    app.redeem(&own.code, "ben").await.expect("redeem");
    let ben = app.list(pb::ListForUserRequest { user_id: "ben".into(), ..Default::default() }).await.expect("list");
    assert_eq!(ben.invitations.len(), 2);
}
