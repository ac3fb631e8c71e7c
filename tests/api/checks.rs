use invitations::domain::code::CodeGenerator;
use invitations::pb;

use crate::helpers::TestApp;

#[tokio::test]
async fn check_code_tells_why_not_without_spending() {
    let app = TestApp::spawn().await;
    let invs = app.mint_for("alice", 3).await;

    let ok = app.check(&invs[0].code).await;
    assert!(ok.redeemable);
    assert_eq!(ok.reason, "");
    assert_eq!(ok.inviter_id, "alice");
    assert_eq!(ok.remaining_uses, 1);
    assert_eq!(ok.normalized_code, invs[0].code);
    // Checking twice changes nothing.
    assert!(app.check(&invs[0].code).await.redeemable);
    assert_eq!(app.count("redemptions").await, 0);

    app.redeem(&invs[1].code, "bob").await.expect("redeem");
    let spent = app.check(&invs[1].code).await;
    assert!(!spent.redeemable);
    assert_eq!(spent.reason, "ALREADY_REDEEMED");

    app.revoke(pb::RevokeRequest { invitation_ids: vec![invs[2].id.clone()], ..Default::default() })
        .await
        .expect("revoke");
    assert_eq!(app.check(&invs[2].code).await.reason, "REVOKED");

    let unknown = CodeGenerator::new(15).expect("len").generate().expect("rng");
    assert_eq!(app.check(unknown.as_str()).await.reason, "CODE_NOT_FOUND");
    assert_eq!(app.check("nonsense").await.reason, "INVALID_CODE_FORMAT");
    let mut typo: Vec<char> = invs[0].code.chars().collect();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == 'Z' { 'Y' } else { 'Z' };
    assert_eq!(app.check(&typo.into_iter().collect::<String>()).await.reason, "CODE_CHECKSUM_MISMATCH");
}
