//! Page tokens come back from clients: decoding arbitrary text never panics
//! and never yields a cursor without the key (a forged token).
#![no_main]

use invitations::crypto::page_token::{MAX_CURSOR_LEN, PageTokens};
use invitations::crypto::secret::Secrets;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let secrets = Secrets::parse("fuzzing-secret-0123456789abcdef-0123456789", &[]).expect("valid secret");
    let tokens = PageTokens::new(&secrets);
    assert!(tokens.decode(token, b"list\0ualice\0*").is_none(), "a token decoded without being made with the key");
    let cursor = &data[..data.len().min(MAX_CURSOR_LEN)];
    let made = tokens.encode(b"scope", cursor);
    assert_eq!(tokens.decode(&made, b"scope").as_deref(), Some(cursor));
});
