//! The events the one-statement Redeem and Reserve write in SQL
//! (migrations/0060_one_round_trip.sql, 0061_quotas_in_one_trip.sql) are the events the Rust encoder
//! writes: they decode to the change, re-encode to the same bytes (fields
//! in order, defaults left out) and sit in the owner's partition.

use invitations::domain::events::{partition_of, reservation_ref};
use invitations::pb;
use invitations::pb::invitation_event::Event;
use prost::Message;
use uuid::Uuid;

use crate::helpers::TestApp;

struct Row {
    id: Uuid,
    partition: i16,
    payload: Vec<u8>,
    create_time: time::OffsetDateTime,
}

async fn outbox_rows(app: &TestApp, event_type: &str) -> Vec<Row> {
    let pool = app.pool().await;
    let rows: Vec<(Uuid, i16, Vec<u8>, time::OffsetDateTime)> =
        sqlx::query_as("SELECT id, partition, payload, create_time FROM outbox WHERE event_type = $1 ORDER BY seq")
            .bind(event_type)
            .fetch_all(&pool)
            .await
            .expect("outbox");
    rows.into_iter().map(|(id, partition, payload, create_time)| Row { id, partition, payload, create_time }).collect()
}

fn decode(row: &Row) -> pb::InvitationEvent {
    let event = pb::InvitationEvent::decode(row.payload.as_slice()).expect("the payload decodes");
    assert_eq!(event.encode_to_vec(), row.payload, "canonical: prost writes the same bytes");
    assert_eq!(event.id, row.id.to_string());
    let time = event.time.expect("time");
    // The event's time is the service's clock (nanoseconds); the row keeps
    // Postgres's microseconds.
    assert_eq!(time.seconds, row.create_time.unix_timestamp());
    assert_eq!(time.nanos as u32 / 1000, row.create_time.nanosecond() / 1000);
    event
}

#[tokio::test]
async fn redeemed_events_written_in_sql_are_the_rust_events() {
    let app = TestApp::spawn().await;
    let owned = app.mint_one("alice").await;
    let unowned =
        app.mint(pb::MintRequest { unowned_count: 1, max_uses: 3, ..Default::default() }).await.expect("mint");
    let unowned = &unowned.invitations[0];
    app.redeem(&owned.code, "bob").await.expect("redeem");
    app.redeem(&unowned.code, "carol-ü").await.expect("redeem");

    let rows = outbox_rows(&app, "redeemed").await;
    assert_eq!(rows.len(), 2);
    let Some(Event::Redeemed(first)) = decode(&rows[0]).event else { panic!("a redeemed event") };
    let batch: Uuid = owned.batch_id.parse().expect("uuid");
    assert_eq!(
        first,
        pb::Redeemed {
            invitation_id: owned.id.clone(),
            inviter_id: "alice".into(),
            invitee_id: "bob".into(),
            batch_id: owned.batch_id.clone(),
            uses: 1,
            max_uses: 1,
            via_reservation: false,
            attributes: Default::default(),
        }
    );
    assert_eq!(rows[0].partition, partition_of(Some("alice"), batch));

    let Some(Event::Redeemed(second)) = decode(&rows[1]).event else { panic!("a redeemed event") };
    assert_eq!((second.inviter_id.as_str(), second.invitee_id.as_str()), ("", "carol-ü"));
    assert_eq!((second.uses, second.max_uses), (1, 3));
    let batch: Uuid = unowned.batch_id.parse().expect("uuid");
    assert_eq!(rows[1].partition, partition_of(None, batch));
}

#[tokio::test]
async fn attributes_in_redeemed_events_written_in_sql_are_the_rust_encoding() {
    let app = TestApp::spawn().await;
    // Keys in an order that is not byte order; an empty value (left out of
    // the entry, as prost does); a multi-byte value; a long one (two-byte
    // length).
    let attributes: std::collections::BTreeMap<String, String> =
        [("role", "editor"), ("Org", "acme-ü"), ("empty", ""), ("topic", &"t".repeat(300))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let minted = app
        .mint(pb::MintRequest { user_ids: vec!["alice".into()], attributes: attributes.clone(), ..Default::default() })
        .await
        .expect("mint");
    app.redeem(&minted.invitations[0].code, "bob").await.expect("redeem");
    let rows = outbox_rows(&app, "redeemed").await;
    assert_eq!(rows.len(), 1);
    // decode() checks prost re-encodes the SQL's bytes exactly.
    let Some(Event::Redeemed(event)) = decode(&rows[0]).event else { panic!("a redeemed event") };
    assert_eq!(event.attributes, attributes);
}

#[tokio::test]
async fn reservation_events_written_in_sql_are_the_rust_events() {
    let app = TestApp::spawn().await;
    let inv = app.mint_one("alice").await;
    let reserved = app
        .client
        .clone()
        .reserve(pb::ReserveRequest { code: inv.code.clone(), ..Default::default() })
        .await
        .expect("reserve")
        .into_inner()
        .reservation
        .expect("reservation");
    let rows = outbox_rows(&app, "reservation.reserved").await;
    assert_eq!(rows.len(), 1);
    let Some(Event::Reservation(event)) = decode(&rows[0]).event else { panic!("a reservation event") };
    let id: Uuid = reserved.id.parse().expect("uuid");
    assert_eq!(event.state, pb::reservation::State::Held as i32);
    assert_eq!(event.invitation_id, inv.id);
    assert_eq!(event.inviter_id, "alice");
    assert_eq!(event.reservation_ref, reservation_ref(id));
    assert_eq!(event.expire_time, reserved.expire_time);
    assert_eq!(event.invitee_id, "");
    assert_eq!(rows[0].partition, partition_of(Some("alice"), inv.batch_id.parse().expect("uuid")));
}

#[tokio::test]
async fn minted_events_of_quota_grants_written_in_sql_are_the_rust_events() {
    let template = "https://cats.example/join?c={code}";
    let app = TestApp::spawn_with(&[
        "--welcome-grant",
        "2",
        "--refill-to",
        "1",
        "--events-include-codes",
        "true",
        "--code-prefix",
        "INV",
        "--link-template",
        template,
    ])
    .await;
    let inv = app.mint_one("alice").await;
    let before = outbox_rows(&app, "minted").await.len();
    app.redeem(&inv.code, "bob").await.expect("redeem");
    let rows = outbox_rows(&app, "minted").await;
    assert_eq!(rows.len(), before + 2, "the welcome grant's and the refill's");
    let owned = |user: &str| {
        let app = &app;
        let user = user.to_owned();
        async move {
            let page = app.list(pb::ListForUserRequest { user_id: user, ..Default::default() }).await;
            let mut invitations = page.expect("list").invitations;
            invitations.retain(|i| i.label.starts_with("policy:"));
            invitations.sort_by(|a, b| a.id.cmp(&b.id));
            invitations
        }
    };
    for (row, (owner, policy)) in rows[before..].iter().zip([("bob", "policy:welcome"), ("alice", "policy:refill")]) {
        let Some(Event::Minted(minted)) = decode(row).event else { panic!("a minted event") };
        let granted = owned(owner).await;
        assert!(!granted.is_empty(), "{owner} was granted invitations");
        let batch = &granted[0].batch_id;
        let codes: Vec<String> = granted.iter().map(|i| i.code.clone()).collect();
        let links: Vec<String> = codes.iter().map(|c| template.replace("{code}", c)).collect();
        assert_eq!(
            minted,
            pb::Minted {
                batch_id: batch.clone(),
                label: policy.into(),
                minted_by: policy.into(),
                max_uses: 1,
                expire_time: None,
                binding: 0,
                grants: vec![pb::Grant {
                    inviter_id: owner.into(),
                    invitation_ids: granted.iter().map(|i| i.id.clone()).collect(),
                    codes,
                    links,
                }],
            }
        );
        assert_eq!(row.partition, partition_of(Some(owner), batch.parse().expect("uuid")));
    }
}

#[tokio::test]
async fn varints_and_timestamps_match_prost() {
    let app = TestApp::spawn().await;
    let pool = app.pool().await;
    for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, 2_097_151, 2_097_152, u32::MAX as u64, 1 << 35, i64::MAX as u64] {
        let sql: Vec<u8> =
            sqlx::query_scalar("SELECT inv_pb_varint($1)").bind(v as i64).fetch_one(&pool).await.expect("encode");
        let mut expected = Vec::new();
        prost::encoding::encode_varint(v, &mut expected);
        assert_eq!(sql, expected, "{v}");
    }
    // A timestamp with and without a fraction, as prost writes it.
    let times =
        [("2026-12-02 03:04:05.123456+00", 1_796_180_645, 123_456_000), ("2026-12-02 03:04:05+00", 1_796_180_645, 0)];
    for (text, seconds, nanos) in times {
        let sql: Vec<u8> = sqlx::query_scalar("SELECT inv_pb_time($1::timestamptz)")
            .bind(text)
            .fetch_one(&pool)
            .await
            .expect("encode");
        assert_eq!(sql, prost_types::Timestamp { seconds, nanos }.encode_to_vec(), "{text}");
    }
}
