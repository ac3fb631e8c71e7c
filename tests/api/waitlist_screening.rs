//! JoinWaitlist is screened like Redeem (disposable e-mail, IP reuse,
//! attempt limits; block and flag modes), and the waitlist's events reach a
//! real nats-server through the outbox.

use invitations::pb;
use invitations::pb::invitation_event::Event as Payload;

use crate::events::{WAIT, relay_args, spawn};
use crate::helpers::{TestApp, assert_error};
use crate::nats::NatsServer;
use crate::waitlist::{admit, admit_request, joined, review};

fn request(applicant: &str, ip: &str, email: &str) -> pb::JoinWaitlistRequest {
    pb::JoinWaitlistRequest {
        applicant_id: applicant.into(),
        client_ip: ip.into(),
        email: email.into(),
        ..Default::default()
    }
}

async fn join_req(app: &TestApp, r: pb::JoinWaitlistRequest) -> Result<pb::WaitlistEntry, tonic::Status> {
    app.client.clone().join_waitlist(r).await.map(|r| r.into_inner().entry.expect("entry"))
}

/// Every check off except what `extra` turns on.
async fn app(extra: &[&str]) -> TestApp {
    let mut args = Vec::new();
    for check in ["--abuse-ip-reuse", "--abuse-same-ip", "--abuse-disposable-email", "--abuse-attempts"] {
        if !extra.contains(&check) {
            args.extend([check, "off"]);
        }
    }
    args.extend_from_slice(extra);
    TestApp::spawn_with(&args).await
}

#[tokio::test]
async fn disposable_e_mail_is_refused_or_flagged() {
    let blocking = app(&["--abuse-disposable-email", "block"]).await;
    let err = join_req(&blocking, request("a", "", "someone@mailinator.com")).await.expect_err("disposable");
    assert_error(&err, tonic::Code::FailedPrecondition, "DISPOSABLE_EMAIL", None);
    let ok = join_req(&blocking, request("b", "", "someone@example.com")).await.expect("join");
    assert!(ok.abuse_flags.is_empty());

    let flagging = app(&["--abuse-disposable-email", "flag"]).await;
    let e = join_req(&flagging, request("a", "", "someone@mailinator.com")).await.expect("join");
    assert_eq!(e.abuse_flags, ["DISPOSABLE_EMAIL"]);
    // Only keyed digests are kept: no address, no IP in the table.
    let pool = flagging.pool().await;
    let text: String =
        sqlx::query_scalar("SELECT row_to_json(e)::text FROM waitlist_entries e").fetch_one(&pool).await.expect("row");
    assert!(!text.contains("mailinator") && !text.contains("someone"), "{text}");
}

#[tokio::test]
async fn ip_reuse_is_refused_or_flagged_and_no_ip_is_stored() {
    let blocking = app(&["--abuse-ip-reuse", "block"]).await;
    join_req(&blocking, request("a", "198.51.100.7", "")).await.expect("first from this network");
    let err = join_req(&blocking, request("b", "198.51.100.7", "")).await.expect_err("reused");
    assert_error(&err, tonic::Code::FailedPrecondition, "IP_ALREADY_USED", None);
    join_req(&blocking, request("c", "198.51.100.8", "")).await.expect("another network");

    let flagging = app(&["--abuse-ip-reuse", "flag"]).await;
    let first = join_req(&flagging, request("a", "198.51.100.7", "")).await.expect("join");
    assert!(first.abuse_flags.is_empty());
    let second = join_req(&flagging, request("b", "198.51.100.7", "")).await.expect("join");
    assert_eq!(second.abuse_flags, ["IP_REUSE"]);
    let pool = flagging.pool().await;
    let text: String = sqlx::query_scalar("SELECT string_agg(row_to_json(e)::text, ' ') FROM waitlist_entries e")
        .fetch_one(&pool)
        .await
        .expect("rows");
    assert!(!text.contains("198.51.100"), "{text}");
}

#[tokio::test]
async fn guessed_referral_handles_count_against_the_attempt_limit() {
    let blocking = app(&["--abuse-attempts", "block", "--attempt-limit", "2"]).await;
    let guess = |applicant: &str| pb::JoinWaitlistRequest {
        referrer: "r-guess".into(),
        ..request(applicant, "203.0.113.5", "")
    };
    for applicant in ["g1", "g2"] {
        let err = join_req(&blocking, guess(applicant)).await.expect_err("unknown handle");
        assert_error(&err, tonic::Code::NotFound, "NOT_FOUND", Some("referrer"));
    }
    let err = join_req(&blocking, request("g3", "203.0.113.5", "")).await.expect_err("over the limit");
    assert_error(&err, tonic::Code::ResourceExhausted, "TOO_MANY_ATTEMPTS", None);
    join_req(&blocking, request("g3", "203.0.113.99", "")).await.expect("another client");

    let flagging = app(&["--abuse-attempts", "flag", "--attempt-limit", "2"]).await;
    for applicant in ["g1", "g2"] {
        join_req(&flagging, guess(applicant)).await.expect_err("unknown handle");
    }
    let e = join_req(&flagging, request("g3", "203.0.113.5", "")).await.expect("flagged, not refused");
    assert_eq!(e.abuse_flags, ["ATTEMPT_LIMIT"]);
}

#[tokio::test]
async fn joined_reviewed_and_admitted_events_reach_nats_without_codes() {
    let nats = NatsServer::start().await;
    let app = spawn(relay_args(&nats), None).await;
    let consumer = nats.consumer().await;
    let a = joined(&app, "ann", "").await;
    joined(&app, "ben", &a.referral_handle).await;
    joined(&app, "ann", "").await; // a repeat join emits nothing
    review(&app, &[&a.id], pb::ReviewDecision::Approve).await.expect("review");
    let wave = admit(&app, admit_request(1)).await;
    // joined ×2, reviewed, minted, admitted.
    let events = consumer.wait_for(5, WAIT).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind()).collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(sorted, ["minted", "waitlist.admitted", "waitlist.joined", "waitlist.joined", "waitlist.reviewed"]);
    for e in &events {
        match e.payload() {
            Payload::WaitlistJoined(j) => assert!(j.applicant_id == "ann" || j.applicant_id == "ben"),
            Payload::WaitlistReviewed(r) => {
                assert_eq!((r.applicant_ids.as_slice(), r.approved), ([String::from("ann")].as_slice(), true))
            }
            Payload::WaitlistAdmitted(adm) => {
                assert_eq!(adm.applicant_id, "ann");
                assert_eq!(adm.entry_id, a.id);
                let inv = wave.entries[0].invitation.as_ref().expect("invitation");
                assert_eq!(adm.invitation_id, inv.id);
                assert!(adm.code.is_empty() && adm.link.is_empty(), "no code without --events-include-codes");
            }
            Payload::Minted(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
}

#[tokio::test]
async fn admitted_events_carry_the_code_only_when_turned_on() {
    let nats = NatsServer::start().await;
    let mut args = relay_args(&nats);
    args.extend(["--events-include-codes", "true"].map(String::from));
    let app = spawn(args, None).await;
    joined(&app, "ann", "").await;
    let wave = admit(&app, admit_request(1)).await;
    let events = nats.consumer().await.wait_for(3, WAIT).await;
    let admitted = events
        .iter()
        .find_map(|e| match e.payload() {
            Payload::WaitlistAdmitted(a) => Some(a.clone()),
            _ => None,
        })
        .expect("an admitted event");
    let inv = wave.entries[0].invitation.as_ref().expect("invitation");
    assert_eq!((admitted.code.as_str(), admitted.link.as_str()), (inv.code.as_str(), inv.link.as_str()));
}

#[tokio::test]
async fn joining_through_a_referral_from_the_referrers_network_is_refused_or_flagged() {
    let referred = |applicant: &str, handle: &str, ip: &str| pb::JoinWaitlistRequest {
        referrer: handle.into(),
        ..request(applicant, ip, "")
    };
    let blocking = app(&["--abuse-same-ip", "block"]).await;
    let first = join_req(&blocking, request("a", "198.51.100.7", "")).await.expect("join");
    let err = join_req(&blocking, referred("alt", &first.referral_handle, "198.51.100.7")).await.expect_err("same IP");
    assert_error(&err, tonic::Code::FailedPrecondition, "SAME_IP_AS_INVITER", None);
    assert_eq!(crate::waitlist::entry(&blocking, "a").await.expect("get").referrals, 0, "no bump for a refusal");
    join_req(&blocking, referred("friend", &first.referral_handle, "203.0.113.9")).await.expect("another network");
    join_req(&blocking, request("solo", "198.51.100.7", "")).await.expect("no referrer: nothing to compare");

    let flagging = app(&["--abuse-same-ip", "flag"]).await;
    let first = join_req(&flagging, request("a", "198.51.100.7", "")).await.expect("join");
    let alt = join_req(&flagging, referred("alt", &first.referral_handle, "198.51.100.7")).await.expect("flagged");
    assert_eq!(alt.abuse_flags, ["SAME_IP_AS_INVITER"]);
}
