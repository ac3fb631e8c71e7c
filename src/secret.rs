//! The server secret and the purpose-bound keys derived from it. One master
//! secret is configured; each use (page tokens, and later code hashing) gets
//! its own key, HMAC-SHA256(secret, purpose), so no key serves two purposes.

use hmac::{Hmac, Mac};
use rand::TryRngCore;
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
        if value.len() < MIN_SECRET_LEN {
            return Err(format!("the secret must be at least {MIN_SECRET_LEN} bytes"));
        }
        Ok(Self(value.as_bytes().to_vec()))
    }

    /// A random secret for this process only: page tokens stop working across
    /// restarts and replicas. For local use; production configures one.
    pub fn ephemeral() -> Result<Self, rand::rand_core::OsError> {
        let mut bytes = vec![0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        mac(&self.0, &[purpose.as_bytes()])
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
