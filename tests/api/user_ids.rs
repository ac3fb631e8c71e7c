//! Names an operator reads must look like what they are: every field that
//! holds a user id (and every `*_by` actor name) refuses Unicode format
//! characters (category Cf) and blank-looking values, naming the field, and
//! changes nothing.

use invitations::pb;
use tonic::Code;

use crate::helpers::{TestApp, assert_error, member};

/// Right-to-left override: `alice\u{202E}cod.exe` reads as `aliceexe.doc`.
const RLO: &str = "alice\u{202E}cod.exe";
/// Zero-width space: looks exactly like `alice`.
const ZWSP: &str = "ali\u{200B}ce";
/// Blank-looking: an ideographic space and a no-break space.
const BLANK: &str = "\u{3000}\u{A0}";

fn users(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn every_id_field_refuses_format_characters_and_blank_ids() {
    let app = TestApp::spawn().await;
    let code = app.mint_one("omid").await.code;
    let invitations_before = app.count("invitations").await;
    let members_before = app.count("members").await;

    for bad in [RLO, ZWSP, BLANK] {
        let mut calls: Vec<(&str, Result<(), tonic::Status>)> = vec![];
        let mint = pb::MintRequest { user_ids: users(&["ok", bad]), ..Default::default() };
        calls.push(("user_ids[1]", app.mint(mint).await.map(drop)));
        let mint = pb::MintRequest { user_ids: users(&["ok"]), minted_by: bad.into(), ..Default::default() };
        calls.push(("minted_by", app.mint(mint).await.map(drop)));
        let list = pb::ListForUserRequest { user_id: bad.into(), ..Default::default() };
        calls.push(("user_id", app.list(list).await.map(drop)));
        calls.push(("invitee_id", app.redeem(&code, bad).await.map(drop)));
        let revoke = pb::RevokeRequest { user_id: bad.into(), ..Default::default() };
        calls.push(("user_id", app.revoke(revoke).await.map(drop)));
        let revoke = pb::RevokeRequest { user_id: "omid".into(), revoked_by: bad.into(), ..Default::default() };
        calls.push(("revoked_by", app.revoke(revoke).await.map(drop)));
        let graph = pb::GetInviteGraphRequest { user_id: bad.into(), ..Default::default() };
        calls.push(("user_id", app.graph(graph).await.map(drop)));
        calls.push(("members[0].user_id", app.register(vec![member(bad, None, None)]).await.map(drop)));
        let reparent = pb::ReparentRequest { user_id: bad.into(), make_root: true, ..Default::default() };
        calls.push(("user_id", app.reparent(reparent).await.map(drop)));
        let reparent = pb::ReparentRequest { user_id: "omid".into(), new_inviter_id: bad.into(), ..Default::default() };
        calls.push(("new_inviter_id", app.reparent(reparent).await.map(drop)));
        let reparent = pb::ReparentRequest {
            user_id: "omid".into(),
            make_root: true,
            reparented_by: bad.into(),
            ..Default::default()
        };
        calls.push(("reparented_by", app.reparent(reparent).await.map(drop)));
        let privileges = pb::SetInvitePrivilegesRequest { user_id: bad.into(), ..Default::default() };
        calls.push(("user_id", app.privileges(privileges).await.map(drop)));
        let privileges =
            pb::SetInvitePrivilegesRequest { user_id: "omid".into(), updated_by: bad.into(), ..Default::default() };
        calls.push(("updated_by", app.privileges(privileges).await.map(drop)));

        for (field, result) in calls {
            let err = result.expect_err(&format!("{field} = {bad:?} was accepted"));
            assert_error(&err, Code::InvalidArgument, "INVALID_ARGUMENT", Some(field));
            let details = tonic_types::StatusExt::get_details_bad_request(&err).expect("BadRequest");
            let violation = details.field_violations.iter().find(|v| v.field == field).expect("named");
            let description = &violation.description;
            let expected = if bad == BLANK { "only whitespace" } else { "format characters" };
            assert!(description.contains(expected), "{field} = {bad:?}: {description}");
        }
    }
    assert_eq!(app.count("invitations").await, invitations_before, "a refused call minted");
    assert_eq!(app.count("members").await, members_before, "a refused call registered a member");
    assert!(app.check(&code).await.redeemable, "the code was not redeemed");

    // The same ids without the invisible characters are fine.
    let ok = pb::MintRequest { user_ids: users(&["alice", "ana maria", "ユーザー"]), ..Default::default() };
    assert_eq!(app.mint(ok).await.expect("visible ids are accepted").invitations.len(), 3);
}
