//! What the service keeps at rest without keeping it readable: keyed lookup
//! hashes (codes, IP prefixes, attempt-counter keys) and authenticated
//! encryption for what must be read back (codes for ListForUser, stored
//! idempotent answers). It holds keys derived from the server secrets and
//! knows nothing about SQL or gRPC.
//!
//! - Lookup: `HMAC(key_lookup, value)`. A dump without the secret gives no
//!   way to test a guessed code offline. During a rotation a value has one
//!   hash per configured secret; callers look up all of them (`hashes`).
//! - Sealing: XChaCha20-Poly1305 with a random 24-byte nonce, the row's
//!   identity as associated data (so a ciphertext moved to another row does
//!   not open), stored as `nonce || ciphertext` with the secret's key id in
//!   its own column.

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::TryRngCore;

use crate::crypto::secret::{Secret, Secrets, mac};

const NONCE_LEN: usize = 24;

/// What a lookup hash is of; each gets its own key.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    Code,
    IpPrefix,
    Attempts,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Code => "invitations/code-lookup/v1",
            Purpose::IpPrefix => "invitations/ip-prefix/v1",
            Purpose::Attempts => "invitations/attempts/v1",
        }
    }
}

struct Keys {
    id: i32,
    code: [u8; 32],
    ip: [u8; 32],
    attempts: [u8; 32],
    seal: XChaCha20Poly1305,
}

impl Keys {
    fn new(secret: &Secret) -> Self {
        let seal_key = secret.derive("invitations/seal/v1");
        Self {
            id: secret.key_id(),
            code: secret.derive(Purpose::Code.label()),
            ip: secret.derive(Purpose::IpPrefix.label()),
            attempts: secret.derive(Purpose::Attempts.label()),
            seal: XChaCha20Poly1305::new(&seal_key.into()),
        }
    }

    fn lookup_key(&self, purpose: Purpose) -> &[u8; 32] {
        match purpose {
            Purpose::Code => &self.code,
            Purpose::IpPrefix => &self.ip,
            Purpose::Attempts => &self.attempts,
        }
    }
}

/// A value sealed under one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: i32,
    /// `nonce || ciphertext || tag`.
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("OS random source: {0}")]
    Random(String),
    #[error("encryption failed")]
    Seal,
}

pub struct Vault {
    current: Keys,
    /// Every configured secret by key id, the current one included.
    by_id: HashMap<i32, Keys>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("current_key_id", &self.current.id).finish_non_exhaustive()
    }
}

impl Vault {
    pub fn new(secrets: &Secrets) -> Self {
        let by_id = secrets.all().map(|s| (s.key_id(), Keys::new(s))).collect();
        Self { current: Keys::new(&secrets.current), by_id }
    }

    pub fn current_key_id(&self) -> i32 {
        self.current.id
    }

    /// Key ids of the secrets that are configured but no longer current.
    pub fn previous_key_ids(&self) -> Vec<i32> {
        self.by_id.keys().copied().filter(|id| *id != self.current.id).collect()
    }

    /// The lookup hash under the current secret (what new rows store).
    pub fn hash(&self, purpose: Purpose, value: &[u8]) -> Vec<u8> {
        mac(self.current.lookup_key(purpose), &[value]).to_vec()
    }

    /// The lookup hash under every configured secret, current first: rows
    /// written before a rotation are found until `rekey` has rewritten them.
    pub fn hashes(&self, purpose: Purpose, value: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![self.hash(purpose, value)];
        for (id, keys) in &self.by_id {
            if *id != self.current.id {
                out.push(mac(keys.lookup_key(purpose), &[value]).to_vec());
            }
        }
        out
    }

    /// Encrypts `plaintext` under the current secret, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.try_fill_bytes(&mut nonce).map_err(|e| VaultError::Random(e.to_string()))?;
        let ciphertext = self
            .current
            .seal
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| VaultError::Seal)?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ciphertext);
        Ok(Sealed { key_id: self.current.id, bytes })
    }

    /// Decrypts a sealed value; `None` if its secret is not configured any
    /// more, or it was altered or moved to another row (other `aad`).
    pub fn open(&self, key_id: i32, aad: &[u8], bytes: &[u8]) -> Option<Vec<u8>> {
        let keys = self.by_id.get(&key_id)?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        keys.seal.decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad }).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "another secret that is long enough!!";

    fn vault(current: &str, previous: &[&str]) -> Vault {
        let previous: Vec<String> = previous.iter().map(|s| s.to_string()).collect();
        Vault::new(&Secrets::parse(current, &previous).expect("valid secrets"))
    }

    #[test]
    fn sealed_values_open_only_with_their_row_and_key() {
        let v = vault(A, &[]);
        let sealed = v.seal(b"row-1", b"K7QMX2RT9WZBHA4C").expect("seal");
        assert!(!sealed.bytes.windows(4).any(|w| w == b"K7QM"), "ciphertext shows the plaintext");
        assert_eq!(v.open(sealed.key_id, b"row-1", &sealed.bytes).as_deref(), Some(&b"K7QMX2RT9WZBHA4C"[..]));
        assert_eq!(v.open(sealed.key_id, b"row-2", &sealed.bytes), None, "moved to another row");
        let mut altered = sealed.bytes.clone();
        altered[30] ^= 1;
        assert_eq!(v.open(sealed.key_id, b"row-1", &altered), None, "altered");
        assert_eq!(vault(B, &[]).open(sealed.key_id, b"row-1", &sealed.bytes), None, "other secret");
        assert_eq!(v.open(sealed.key_id, b"row-1", &sealed.bytes[..10]), None, "truncated");
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let v = vault(A, &[]);
        assert_ne!(v.seal(b"r", b"x").expect("seal").bytes, v.seal(b"r", b"x").expect("seal").bytes);
    }

    #[test]
    fn rotation_keeps_old_rows_readable_and_findable() {
        let old = vault(A, &[]);
        let sealed = old.seal(b"row", b"code").expect("seal");
        let old_hash = old.hash(Purpose::Code, b"code");
        let rotated = vault(B, &[A]);
        assert_eq!(rotated.open(sealed.key_id, b"row", &sealed.bytes).as_deref(), Some(&b"code"[..]));
        let hashes = rotated.hashes(Purpose::Code, b"code");
        assert_eq!(hashes.len(), 2);
        assert_eq!(hashes[0], rotated.hash(Purpose::Code, b"code"), "current first");
        assert!(hashes.contains(&old_hash));
        assert_eq!(rotated.previous_key_ids(), vec![old.current_key_id()]);
    }

    #[test]
    fn purposes_hash_differently() {
        let v = vault(A, &[]);
        assert_ne!(v.hash(Purpose::Code, b"x"), v.hash(Purpose::IpPrefix, b"x"));
        assert_ne!(v.hash(Purpose::Code, b"x"), v.hash(Purpose::Attempts, b"x"));
    }
}
