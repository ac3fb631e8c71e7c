//! Caller authentication: who may call what. Callers are configured as
//! bearer-token hashes (`--caller-tokens`) or TLS client-certificate
//! identities (`--client-identities`), each with a name and scopes. One
//! tower layer ([`AuthLayer`]) checks every gRPC call against the one table
//! in [`scopes`] (methods not in it need `admin`):
//!
//! - health: always open (Kubernetes probes carry no credentials);
//! - reflection: open with `--reflection-public`, else any authenticated caller;
//! - no valid credential: UNAUTHENTICATED; a valid one without the scope:
//!   PERMISSION_DENIED (ErrorInfo says which scope).
//!
//! The authenticated [`Caller`] goes into the request's extensions (handlers
//! record its name as minted_by / revoked_by) and into the telemetry's
//! `caller` attribute. With no credentials configured nothing is enforced;
//! `server` then allows only loopback listeners unless
//! `--insecure-allow-unauthenticated` (secure by default).
//!
//! Tokens are compared as SHA-256 digests in constant time, against every
//! configured entry, so timing tells neither which entry nor how much matched.

mod layer;
pub mod scopes;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use layer::{AuthLayer, Policy};

/// The policy the layer enforces.
pub fn auth_layer_policy(callers: Callers, reflection_public: bool) -> Policy {
    Policy { callers, reflection_public }
}
pub use scopes::Scope;

/// An authenticated caller, as the handlers see it (request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    scopes: Vec<Scope>,
}

impl Caller {
    /// `admin` may do everything; the others only what they name.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }
}

/// Who is recorded as having changed something: the authenticated caller,
/// with the person it acts for when the request names another one
/// (`ops-cli for alice`). Without authentication, the request's own field.
pub fn recorded_actor(caller: Option<&Caller>, requested: &str) -> String {
    match caller {
        None => requested.to_owned(),
        Some(c) if requested.is_empty() || requested == c.name => c.name.clone(),
        Some(c) => format!("{} for {requested}", c.name),
    }
}

struct TokenEntry {
    digest: [u8; 32],
    caller: Caller,
}

/// The configured callers.
#[derive(Default)]
pub struct Callers {
    tokens: Vec<TokenEntry>,
    identities: Vec<(String, Caller)>,
}

impl std::fmt::Debug for Callers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callers")
            .field("tokens", &self.tokens.len())
            .field("identities", &self.identities.len())
            .finish()
    }
}

/// Longest caller name (names are recorded on what callers change).
const MAX_NAME_LEN: usize = 128;

fn entries(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty())
}

fn parse_scopes(list: &str) -> Result<Vec<Scope>, String> {
    list.split('+').map(Scope::parse).collect()
}

fn parse_name(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(|c| c.is_control()) {
        return Err(format!("caller name {name:?} must be 1-{MAX_NAME_LEN} bytes without control characters"));
    }
    Ok(name.to_owned())
}

impl Callers {
    /// Parses `--caller-tokens` (`name:scopes:sha256hex`) and
    /// `--client-identities` (`identity:scopes`; the identity may itself
    /// contain colons, e.g. a SPIFFE URI).
    pub fn parse(tokens: &str, identities: &str) -> Result<Self, String> {
        let mut callers = Callers::default();
        for entry in entries(tokens) {
            let mut parts = entry.rsplitn(3, ':');
            let (Some(hex), Some(scopes), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                return Err("--caller-tokens entries are name:scopes:sha256hex".into());
            };
            let digest = parse_digest(hex).map_err(|e| format!("--caller-tokens entry for {name:?}: {e}"))?;
            if callers.tokens.iter().any(|t| t.digest == digest) {
                return Err(format!("--caller-tokens: the token of {name:?} is listed twice"));
            }
            let caller = Caller { name: parse_name(name)?, scopes: parse_scopes(scopes)? };
            callers.tokens.push(TokenEntry { digest, caller });
        }
        for entry in entries(identities) {
            let Some((identity, scopes)) = entry.rsplit_once(':') else {
                return Err("--client-identities entries are identity:scopes".into());
            };
            let caller = Caller { name: parse_name(identity)?, scopes: parse_scopes(scopes)? };
            callers.identities.push((identity.to_owned(), caller));
        }
        Ok(callers)
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.identities.is_empty()
    }

    pub fn has_identities(&self) -> bool {
        !self.identities.is_empty()
    }

    /// The caller a bearer token belongs to. Compares the token's digest with
    /// every entry in constant time (no early exit).
    pub fn by_token(&self, token: &str) -> Option<&Caller> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for entry in &self.tokens {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(&entry.caller);
            }
        }
        found
    }

    /// The caller one of a verified certificate's identities maps to (the
    /// first configured entry that matches).
    pub fn by_identity(&self, names: &[String]) -> Option<&Caller> {
        self.identities.iter().find(|(id, _)| names.iter().any(|n| n == id)).map(|(_, c)| c)
    }
}

fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the token hash must be 64 hex digits (SHA-256; see `invitations hash-token`)".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Lower-case hex SHA-256 of a token: what `--caller-tokens` holds.
pub fn token_digest_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(token: &str) -> String {
        token_digest_hex(token)
    }

    #[test]
    fn tokens_map_to_their_caller() {
        let config =
            format!("signup-svc:signup:{}, ops:admin:{}\nreporting:read+signup:{}", hex("s"), hex("o"), hex("r"));
        let callers = Callers::parse(&config, "").expect("valid");
        let signup = callers.by_token("s").expect("known token");
        assert_eq!(signup.name, "signup-svc");
        assert!(signup.may(Scope::Signup) && !signup.may(Scope::Read) && !signup.may(Scope::Admin));
        let ops = callers.by_token("o").expect("known token");
        assert!(ops.may(Scope::Signup) && ops.may(Scope::Read) && ops.may(Scope::Admin), "admin may everything");
        let reporting = callers.by_token("r").expect("known token");
        assert!(reporting.may(Scope::Read) && reporting.may(Scope::Signup) && !reporting.may(Scope::Admin));
        assert!(callers.by_token("unknown").is_none());
        assert!(callers.by_token("").is_none());
    }

    #[test]
    fn bad_configuration_is_refused() {
        for bad in [
            "name:signup",
            &format!("name:root:{}", hex("x")),
            "name:signup:abcd",
            &format!("name:signup:{}", "z".repeat(64)),
            &format!(":signup:{}", hex("x")),
            &format!("a:signup:{h},b:read:{h}", h = hex("x")),
        ] {
            assert!(Callers::parse(bad, "").is_err(), "{bad}");
        }
        assert!(Callers::parse("", "no-scopes").is_err());
        assert!(Callers::parse("", "").expect("empty is valid").is_empty());
    }

    #[test]
    fn identities_may_contain_colons() {
        let callers =
            Callers::parse("", "spiffe://cluster.local/ns/web/sa/signup:signup, batch.internal:admin").expect("valid");
        let names = vec!["other".to_owned(), "spiffe://cluster.local/ns/web/sa/signup".to_owned()];
        let caller = callers.by_identity(&names).expect("mapped");
        assert_eq!(caller.name, "spiffe://cluster.local/ns/web/sa/signup");
        assert!(caller.may(Scope::Signup) && !caller.may(Scope::Admin));
        assert!(callers.by_identity(&["nobody".to_owned()]).is_none());
    }

    #[test]
    fn the_actor_combines_caller_and_request() {
        let ops = Caller { name: "ops-cli".into(), scopes: vec![Scope::Admin] };
        assert_eq!(recorded_actor(None, "alice"), "alice");
        assert_eq!(recorded_actor(Some(&ops), ""), "ops-cli");
        assert_eq!(recorded_actor(Some(&ops), "ops-cli"), "ops-cli");
        assert_eq!(recorded_actor(Some(&ops), "alice"), "ops-cli for alice");
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(token_digest_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
