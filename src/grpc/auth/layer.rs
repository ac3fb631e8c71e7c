//! The tower layer that authenticates every gRPC call (see the module docs
//! of `auth`). It sits inside the telemetry layer, so refused calls are
//! logged and counted like any other, with the caller named when known.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Code;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::scopes::{self, Scope};
use super::{Caller, Callers};
use crate::telemetry::CallerSlot;

/// What the layer enforces.
pub struct Policy {
    pub callers: Callers,
    /// Let anyone call reflection.
    pub reflection_public: bool,
}

impl Policy {
    /// Nothing to enforce: no caller credentials are configured.
    pub fn is_open(&self) -> bool {
        self.callers.is_empty()
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    policy: Arc<Policy>,
}

impl AuthLayer {
    pub fn new(policy: Policy) -> Self {
        Self { policy: Arc::new(policy) }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, policy: self.policy.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    policy: Arc<Policy>,
}

/// What the call needs.
enum Need {
    Nothing,
    AnyCaller,
    Scope(Scope),
}

fn need(policy: &Policy, path: &str) -> Need {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if service == "grpc.health.v1.Health" {
        Need::Nothing
    } else if service.starts_with("grpc.reflection.") {
        if policy.reflection_public { Need::Nothing } else { Need::AnyCaller }
    } else if service == scopes::SERVICE {
        Need::Scope(scopes::required(method))
    } else {
        // Anything else is UNIMPLEMENTED anyway; do not tell strangers so.
        Need::Scope(Scope::Admin)
    }
}

/// Why a call is refused.
enum Refusal {
    Unauthenticated(&'static str),
    Denied(Scope),
}

impl Refusal {
    fn status(&self) -> tonic::Status {
        use std::collections::HashMap;
        use tonic_types::{ErrorDetails, StatusExt};
        let domain = crate::grpc::status::ERROR_DOMAIN;
        match self {
            Refusal::Unauthenticated(why) => tonic::Status::with_error_details(
                Code::Unauthenticated,
                *why,
                ErrorDetails::with_error_info("UNAUTHENTICATED", domain, HashMap::new()),
            ),
            Refusal::Denied(scope) => tonic::Status::with_error_details(
                Code::PermissionDenied,
                format!("this call needs the {} scope", scope.name()),
                ErrorDetails::with_error_info(
                    "PERMISSION_DENIED",
                    domain,
                    HashMap::from([("scope".to_owned(), scope.name().to_owned())]),
                ),
            ),
        }
    }
}

/// The caller of a request: by bearer token, else by verified client certificate.
fn identify<B>(callers: &Callers, request: &http::Request<B>) -> Result<Caller, Refusal> {
    if let Some(value) = request.headers().get(http::header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(Refusal::Unauthenticated("the authorization header must be `Bearer <token>`"))?;
        // A wrong token is refused even if a certificate would do: the
        // caller meant the token, and silently ignoring it hides mistakes.
        return callers.by_token(token).cloned().ok_or(Refusal::Unauthenticated("unknown bearer token"));
    }
    if callers.has_identities()
        && let Some(info) = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()
        && let Some(certs) = info.peer_certs()
        && let Some(leaf) = certs.first()
    {
        let names = crate::grpc::tls::identities(leaf.as_ref());
        return callers
            .by_identity(&names)
            .cloned()
            .ok_or(Refusal::Unauthenticated("the client certificate is not mapped to a caller"));
    }
    Err(Refusal::Unauthenticated(
        "this call needs credentials: `authorization: Bearer <token>` or a client certificate",
    ))
}

fn check<B>(policy: &Policy, request: &http::Request<B>) -> Result<Option<Caller>, Refusal> {
    let need = need(policy, request.uri().path());
    if matches!(need, Need::Nothing) || policy.is_open() {
        return Ok(None);
    }
    let caller = identify(&policy.callers, request)?;
    if let Some(slot) = request.extensions().get::<CallerSlot>() {
        slot.set(&caller.name);
    }
    match need {
        Need::Scope(scope) if !caller.may(scope) => Err(Refusal::Denied(scope)),
        _ => Ok(Some(caller)),
    }
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<std::future::Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match check(&self.policy, &request) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                futures_util::future::Either::Right(self.inner.call(request))
            }
            Err(refusal) => futures_util::future::Either::Left(std::future::ready(Ok(refusal.status().into_http()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(reflection_public: bool) -> Policy {
        let tokens = format!("signup:signup:{}", super::super::token_digest_hex("t"));
        Policy { callers: Callers::parse(&tokens, "").expect("valid"), reflection_public }
    }

    fn request(path: &str, auth: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri(path);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).expect("request")
    }

    fn code(r: Result<Option<Caller>, Refusal>) -> Code {
        match r {
            Ok(_) => Code::Ok,
            Err(e) => e.status().code(),
        }
    }

    #[test]
    fn health_is_open_and_reflection_follows_the_setting() {
        let p = policy(false);
        assert_eq!(code(check(&p, &request("/grpc.health.v1.Health/Check", None))), Code::Ok);
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert_eq!(code(check(&p, &request(reflection, None))), Code::Unauthenticated);
        assert_eq!(code(check(&p, &request(reflection, Some("Bearer t")))), Code::Ok);
        assert_eq!(code(check(&policy(true), &request(reflection, None))), Code::Ok);
    }

    #[test]
    fn malformed_headers_are_unauthenticated() {
        let p = policy(false);
        for auth in ["t", "Basic dDp0", "Bearer", "Bearer wrong"] {
            let r = check(&p, &request("/invitations.v1.InvitationService/Redeem", Some(auth)));
            assert_eq!(code(r), Code::Unauthenticated, "{auth}");
        }
        let r = check(&p, &request("/invitations.v1.InvitationService/Redeem", Some("bearer t")));
        assert_eq!(code(r), Code::Ok);
    }

    #[test]
    fn the_authenticated_name_reaches_telemetry() {
        let p = policy(false);
        let mut r = request("/invitations.v1.InvitationService/Mint", Some("Bearer t"));
        let slot = CallerSlot::default();
        r.extensions_mut().insert(slot.clone());
        assert_eq!(code(check(&p, &r)), Code::PermissionDenied);
        assert_eq!(slot.get(), Some("signup"), "a refused caller is still named in the access log");
        let mut r = request("/invitations.v1.InvitationService/Redeem", Some("Bearer t"));
        let slot = CallerSlot::default();
        r.extensions_mut().insert(slot.clone());
        let caller = check(&p, &r).ok().flatten().expect("allowed");
        assert_eq!((caller.name.as_str(), slot.get()), ("signup", Some("signup")));
    }

    #[test]
    fn unknown_methods_and_services_need_admin() {
        let p = policy(false);
        let r = check(&p, &request("/invitations.v1.InvitationService/NotYetListed", Some("Bearer t")));
        assert_eq!(code(r), Code::PermissionDenied);
        let r = check(&p, &request("/other.Service/Method", Some("Bearer t")));
        assert_eq!(code(r), Code::PermissionDenied);
    }
}
