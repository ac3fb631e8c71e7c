//! TLS and mutual TLS with certificates made in the test (rcgen): a CA, a
//! server certificate for localhost, and client certificates whose
//! identities map to callers.

use std::path::PathBuf;
use std::time::Duration;

use invitations::pb;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::helpers::{TestApp, assert_error, bearer};

struct Pki {
    dir: PathBuf,
    ca_pem: String,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("invitations-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "invitations test CA");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA");
        let ca_pem = cert.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).expect("write");
        Self { dir, ca_pem, ca: Issuer::new(params, key) }
    }

    /// A certificate signed by the CA: (cert PEM, key PEM).
    fn issue(&self, sans: Vec<SanType>, cn: &str) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = sans;
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the server's certificate and key; returns the serve flags.
    fn server_args(&self) -> Vec<String> {
        let (cert, key) = self.issue(vec![SanType::DnsName("localhost".try_into().expect("dns"))], "server");
        std::fs::write(self.dir.join("server.pem"), cert).expect("write");
        std::fs::write(self.dir.join("server.key"), key).expect("write");
        let path = |f: &str| self.dir.join(f).display().to_string();
        vec!["--tls-cert".into(), path("server.pem"), "--tls-key".into(), path("server.key")]
    }

    fn client(&self, identity: Option<(String, String)>) -> ClientTlsConfig {
        let config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem)).domain_name("localhost");
        match identity {
            Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn tls_serves_calls_and_refuses_plaintext() {
    let pki = Pki::new();
    let args = pki.server_args();
    let app = TestApp::spawn_tls(&strs(&args), pki.client(None)).await;
    let minted = app.mint_one("alice").await;
    assert!(app.check(&minted.code).await.redeemable, "calls work over TLS");

    // A plaintext client gets no answer from the TLS port.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr)).expect("endpoint");
    let plain = endpoint.connect().await;
    if let Ok(channel) = plain {
        let mut client = pb::invitation_service_client::InvitationServiceClient::new(channel);
        let err = client.check_code(pb::CheckCodeRequest { code: minted.code, ..Default::default() }).await;
        assert!(err.is_err(), "plaintext must not be served");
    }
    // A client that does not trust the CA fails the handshake.
    let stranger = Pki::new();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", app.addr))
        .expect("endpoint")
        .tls_config(stranger.client(None))
        .expect("tls");
    assert!(endpoint.connect().await.is_err(), "untrusted server certificate");
}

#[tokio::test]
async fn client_certificates_map_to_callers() {
    let pki = Pki::new();
    let token = "admin-token-over-tls";
    let mut args = pki.server_args();
    let ca = pki.dir.join("ca.pem").display().to_string();
    let identities = "spiffe://test/ns/web/sa/signup:signup, ops.internal:admin";
    let tokens = format!("ops:admin:{}", invitations::grpc::auth::token_digest_hex(token));
    args.extend(["--tls-client-ca".into(), ca, "--client-identities".into(), identities.into()]);
    args.extend(["--caller-tokens".into(), tokens]);

    // The admin certificate (DNS SAN) may mint.
    let admin_cert = pki.issue(vec![SanType::DnsName("ops.internal".try_into().expect("dns"))], "ops");
    let admin = TestApp::spawn_tls(&strs(&args), pki.client(Some(admin_cert))).await;
    let minted = admin.mint_one("alice").await;
    assert_eq!(minted.minted_by, "ops.internal", "the certificate identity is the caller");

    // The sign-up certificate (URI SAN, SPIFFE style) may redeem, not mint.
    let uri = SanType::URI("spiffe://test/ns/web/sa/signup".try_into().expect("uri"));
    let signup = pki.client(Some(pki.issue(vec![uri], "signup")));
    let mut client = pb::invitation_service_client::InvitationServiceClient::new(
        crate::helpers::connect_tls(admin.addr, signup).await,
    );
    let redeem = pb::RedeemRequest { code: minted.code.clone(), invitee_id: "bob".into(), ..Default::default() };
    client.redeem(redeem).await.expect("signup certificate redeems");
    let err =
        client.mint(pb::MintRequest { user_ids: vec!["x".into()], ..Default::default() }).await.expect_err("no admin");
    assert_error(&err, Code::PermissionDenied, "PERMISSION_DENIED", None);

    // A certificate from the CA that maps to no caller is not enough…
    let unmapped = pki.client(Some(pki.issue(vec![SanType::DnsName("nobody.internal".try_into().expect("dns"))], "x")));
    let mut client = pb::invitation_service_client::InvitationServiceClient::new(
        crate::helpers::connect_tls(admin.addr, unmapped).await,
    );
    let err = client.check_code(pb::CheckCodeRequest { code: minted.code.clone(), ..Default::default() }).await;
    assert_error(&err.expect_err("unmapped"), Code::Unauthenticated, "UNAUTHENTICATED", None);

    // …no certificate at all still allows a token (client certificates are optional)…
    let mut client = pb::invitation_service_client::InvitationServiceClient::new(
        crate::helpers::connect_tls(admin.addr, pki.client(None)).await,
    );
    client
        .mint(bearer(pb::MintRequest { user_ids: vec!["y".into()], ..Default::default() }, token))
        .await
        .expect("token");
    let err = client.mint(pb::MintRequest { user_ids: vec!["y".into()], ..Default::default() }).await;
    assert_error(&err.expect_err("neither"), Code::Unauthenticated, "UNAUTHENTICATED", None);

    // …and a certificate from another CA fails the handshake.
    let other = Pki::new();
    let foreign = other.issue(vec![SanType::DnsName("ops.internal".try_into().expect("dns"))], "ops");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{}", admin.addr))
        .expect("endpoint")
        .tls_config(pki.client(Some(foreign)))
        .expect("tls");
    let refused = match endpoint.connect().await {
        Err(_) => true,
        Ok(channel) => pb::invitation_service_client::InvitationServiceClient::new(channel)
            .check_code(pb::CheckCodeRequest { code: minted.code, ..Default::default() })
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from an unknown CA is refused");
}

#[tokio::test]
async fn a_plaintext_health_port_serves_probes_beside_tls() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let pki = Pki::new();
    let mut args = pki.server_args();
    args.extend(["--health-listen".into(), "127.0.0.1:0".into()]);
    let mut process = crate::process::Process::spawn(&strs(&args), &[]).await;
    let health_addr = process.address_logged("serving plaintext health").await;
    let channel = crate::helpers::connect(health_addr).await;
    let health = HealthClient::new(channel.clone());
    crate::helpers::wait_until(Duration::from_secs(20), "plaintext health to say SERVING", || async {
        let request = HealthCheckRequest { service: "invitations.v1.InvitationService".into() };
        matches!(health.clone().check(request).await, Ok(r) if r.get_ref().status() == ServingStatus::Serving)
    })
    .await;
    // Only health: the API is not reachable in plaintext there.
    let mut api = pb::invitation_service_client::InvitationServiceClient::new(channel);
    let err = api.check_code(pb::CheckCodeRequest { code: "x".into(), ..Default::default() }).await;
    assert_eq!(err.expect_err("no API on the health port").code(), Code::Unimplemented);
}
