//! AIP-158 page tokens: opaque, authenticated, and bound to the query they
//! came from. A token is `base64url(version | cursor | tag)` where the tag is
//! an HMAC over the version, the query's scope (method and filters) and the
//! cursor. A forged, altered or foreign token (one replayed with other
//! filters) fails the tag check. The key comes from the server secret (see
//! `secret`); during a rotation tokens made under a previous secret still
//! decode, new ones are made under the current secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::crypto::secret::{Secrets, mac, verify};

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// Longest cursor a token carries (ours are 8- or 16-byte keys).
pub const MAX_CURSOR_LEN: usize = 64;
/// Longest token `decode` looks at: the encoding of the longest cursor.
/// (The fuzzer found that a fixed 256 refused tokens `encode` made for
/// cursors over 175 bytes; the two limits now come from one constant.)
const MAX_TOKEN_LEN: usize = (1 + MAX_CURSOR_LEN + TAG_LEN).div_ceil(3) * 4;

#[derive(Clone)]
pub struct PageTokens {
    /// The current secret's key first.
    keys: Vec<[u8; 32]>,
}

impl PageTokens {
    pub fn new(secrets: &Secrets) -> Self {
        Self { keys: secrets.all().map(|s| s.derive("invitations/page-token/v1")).collect() }
    }

    /// A token for `cursor` (at most [`MAX_CURSOR_LEN`] bytes) in `scope`.
    pub fn encode(&self, scope: &[u8], cursor: &[u8]) -> String {
        debug_assert!(cursor.len() <= MAX_CURSOR_LEN, "page cursors are short keys");
        let tag = mac(&self.keys[0], &[&[VERSION], &(scope.len() as u64).to_be_bytes(), scope, cursor]);
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
        if cursor.len() > MAX_CURSOR_LEN {
            return None;
        }
        let parts: [&[u8]; 4] = [&[VERSION], &(scope.len() as u64).to_be_bytes(), scope, cursor];
        if self.keys.iter().any(|key| verify(key, &parts, tag)) { Some(cursor.to_vec()) } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "another secret that is long enough!!";

    fn tokens_of(current: &str, previous: &[&str]) -> PageTokens {
        let previous: Vec<String> = previous.iter().map(|s| s.to_string()).collect();
        PageTokens::new(&Secrets::parse(current, &previous).expect("valid secrets"))
    }

    fn tokens() -> PageTokens {
        tokens_of(A, &[])
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
        assert!(tokens_of(B, &[]).decode(&token, b"s").is_none());
        // Truncated tags and a wrong version byte.
        assert!(t.decode(&token[..token.len() - 2], b"s").is_none());
        raw = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        raw[0] = 2;
        assert!(t.decode(&URL_SAFE_NO_PAD.encode(&raw), b"s").is_none());
        assert!(t.decode(&"A".repeat(MAX_TOKEN_LEN + 1), b"s").is_none());
    }

    #[test]
    fn tokens_survive_a_rotation() {
        let token = tokens_of(A, &[]).encode(b"s", b"cursor");
        let rotated = tokens_of(B, &[A]);
        assert_eq!(rotated.decode(&token, b"s"), Some(b"cursor".to_vec()));
        assert!(tokens_of(A, &[]).decode(&rotated.encode(b"s", b"c"), b"s").is_none(), "new tokens use the new key");
    }

    /// Regression (found by `scripts/fuzz`): every cursor up to the maximum
    /// round-trips, including the 175-byte shape of the crash input cut to
    /// the limit.
    #[test]
    fn every_allowed_cursor_length_round_trips() {
        let t = tokens();
        for len in 0..=MAX_CURSOR_LEN {
            let cursor: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            assert_eq!(t.decode(&t.encode(b"s", &cursor), b"s"), Some(cursor), "{len}");
        }
        let crash = [b"BJS88_".as_slice(), &[b'S'; 12], b"HUUUHHUHUUU", &[0; 2], b"U"].concat().repeat(4);
        let cut = &crash[..MAX_CURSOR_LEN];
        assert_eq!(t.decode(&t.encode(b"s", cut), b"s").as_deref(), Some(cut));
    }

    /// Whatever bytes arrive, decoding answers (no panic) and only a token
    /// made with the key decodes. The fuzz target `page_token` does the same
    /// at scale (tests/fuzz).
    #[test]
    fn arbitrary_input_never_panics() {
        let t = tokens();
        for input in ["", "=", "AA", "____", "\u{0}", "é", "AQ", "AQAAAAAAAAAAAAAAAAAAAAA"] {
            assert!(t.decode(input, b"s").is_none(), "{input}");
        }
    }
}
