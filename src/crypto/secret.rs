//! The server secret and the purpose-bound keys derived from it. One master
//! secret is configured (`--secret`), plus the secrets it replaced
//! (`--previous-secrets`) while a rotation is under way. Each use (page
//! tokens, code lookup hashes, code encryption, IP hashes, attempt counters)
//! gets its own key, HMAC-SHA256(secret, purpose), so no key serves two
//! purposes, and each secret has a short public key id (stored next to what
//! it protects) so a row says which secret it needs.
//!
//! There is no per-process random fallback: codes are stored encrypted and
//! looked up by keyed hashes, so a secret that changes at restart would make
//! every stored code unusable. `scripts/run` keeps a development secret under
//! `.data/` instead (docs/design.md, "Codes at rest").

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.len() < MIN_SECRET_LEN {
            return Err(format!("a secret must be at least {MIN_SECRET_LEN} bytes"));
        }
        Ok(Self(value.as_bytes().to_vec()))
    }

    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        mac(&self.0, &[purpose.as_bytes()])
    }

    /// A short public name of this secret, stored beside what it protects.
    /// Derived one-way, so it tells nothing about the secret.
    pub fn key_id(&self) -> i32 {
        let d = self.derive("invitations/key-id/v1");
        i32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }
}

/// The current secret and the ones it replaced (rotation in progress).
#[derive(Clone, Debug)]
pub struct Secrets {
    pub current: Secret,
    pub previous: Vec<Secret>,
}

impl Secrets {
    pub fn parse(current: &str, previous: &[String]) -> Result<Self, String> {
        let current = Secret::parse(current).map_err(|e| format!("--secret: {e}"))?;
        let mut list = Vec::new();
        for (i, p) in previous.iter().filter(|p| !p.trim().is_empty()).enumerate() {
            let p = Secret::parse(p).map_err(|e| format!("--previous-secrets[{i}]: {e}"))?;
            if p.key_id() == current.key_id() || list.iter().any(|q: &Secret| q.key_id() == p.key_id()) {
                return Err("--previous-secrets repeats a secret (or the current one)".into());
            }
            list.push(p);
        }
        Ok(Self { current, previous: list })
    }

    /// The current secret first, then the previous ones.
    pub fn all(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.current).chain(self.previous.iter())
    }
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut m =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs.
pub fn verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut m =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for p in parts {
        m.update(p);
    }
    m.verify_truncated_left(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "another secret that is long enough!!";

    #[test]
    fn short_secrets_are_refused() {
        assert!(Secret::parse("too short").is_err());
        assert!(Secrets::parse(A, &[]).is_ok());
        assert!(Secrets::parse("short", &[]).is_err());
        assert!(Secrets::parse(A, &["short".into()]).is_err());
    }

    #[test]
    fn key_ids_differ_and_repeats_are_refused() {
        let s = Secrets::parse(A, &[B.into()]).expect("valid");
        assert_ne!(s.current.key_id(), s.previous[0].key_id());
        assert!(Secrets::parse(A, &[A.into()]).is_err());
        assert!(Secrets::parse(A, &[B.into(), B.into()]).is_err());
        assert_eq!(Secrets::parse(A, &[String::new()]).expect("empty entries ignored").previous.len(), 0);
    }

    #[test]
    fn purposes_get_different_keys() {
        let s = Secret::parse(A).expect("valid");
        assert_ne!(s.derive("a"), s.derive("b"));
        assert_eq!(s.derive("a"), Secret::parse(A).expect("valid").derive("a"));
    }
}
