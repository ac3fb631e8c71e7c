//! AIP-158 page tokens: opaque, authenticated, and bound to the query they
//! came from. A token is `base64url(version | cursor | tag)` where the tag is
//! an HMAC over the version, the query's scope (method and filters) and the
//! cursor. A forged, altered or foreign token (one replayed with other
//! filters) fails the tag check.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::secret::{Secret, mac, verify};

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const MAX_TOKEN_LEN: usize = 256;

#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl PageTokens {
    pub fn new(secret: &Secret) -> Self {
        Self { key: secret.derive("invitations/page-token/v1") }
    }

    pub fn encode(&self, scope: &[u8], cursor: &[u8]) -> String {
        let tag = mac(&self.key, &[&[VERSION], &(scope.len() as u64).to_be_bytes(), scope, cursor]);
        let mut raw = Vec::with_capacity(1 + cursor.len() + TAG_LEN);
        raw.push(VERSION);
        raw.extend_from_slice(cursor);
        raw.extend_from_slice(&tag[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The cursor inside a token made for this scope; `None` for anything else.
    pub fn decode(&self, token: &str, scope: &[u8]) -> Option<Vec<u8>> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() < 1 + TAG_LEN || raw[0] != VERSION {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let cursor = &body[1..];
        if verify(&self.key, &[&[VERSION], &(scope.len() as u64).to_be_bytes(), scope, cursor], tag) {
            Some(cursor.to_vec())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> PageTokens {
        PageTokens::new(&Secret::parse("0123456789abcdef0123456789abcdef").expect("long enough"))
    }

    #[test]
    fn round_trip() {
        let t = tokens();
        let token = t.encode(b"list:alice", b"cursor-bytes");
        assert_eq!(t.decode(&token, b"list:alice"), Some(b"cursor-bytes".to_vec()));
    }

    #[test]
    fn foreign_scope_is_refused() {
        let t = tokens();
        let token = t.encode(b"list:alice", b"cursor");
        assert!(t.decode(&token, b"list:bob").is_none());
    }

    #[test]
    fn altered_or_forged_tokens_are_refused() {
        let t = tokens();
        let token = t.encode(b"s", b"cursor");
        let mut raw = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        raw[2] ^= 1;
        assert!(t.decode(&URL_SAFE_NO_PAD.encode(&raw), b"s").is_none());
        assert!(t.decode("not a token", b"s").is_none());
        assert!(t.decode("", b"s").is_none());
        let other = PageTokens::new(&Secret::parse("another secret that is long enough!!").expect("ok"));
        assert!(other.decode(&token, b"s").is_none());
    }
}
