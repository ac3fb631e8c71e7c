//! Invitation codes: generation from the OS CSPRNG, parsing of what people type,
//! and the check symbol that tells a typo from a wrong code without a database
//! lookup. This module knows nothing about storage.
//!
//! The alphabet has 31 symbols: the digits 2-9 and the letters A-Z without I,
//! L and O, so none of 0/O and 1/I/L can be confused. 31 is prime, which makes
//! a weighted sum modulo 31 (weights 1, 2, … n+1, all distinct and non-zero)
//! catch every single substituted symbol and every swap of two neighbours:
//! a substitution at position i changes the sum by i·δ, a swap of positions i
//! and i+1 by (a−b), and neither is 0 mod 31 when δ ≠ 0 and a ≠ b.

use rand::TryRngCore;
use rand::rngs::OsRng;

/// The symbols a code is written with, in value order.
pub const ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const BASE: u32 = ALPHABET.len() as u32;

/// Fewest random symbols a code may have (40 bits); the default is 15 (74 bits).
pub const MIN_RANDOM_SYMBOLS: usize = 8;
/// Most random symbols: weights 1..=30 stay distinct and non-zero modulo 31.
pub const MAX_RANDOM_SYMBOLS: usize = 29;
/// Default random symbols: 15 × log2(31) ≈ 74 bits, 16 symbols with the check.
pub const DEFAULT_RANDOM_SYMBOLS: usize = 15;
/// Longest prefix an operator may configure.
pub const MAX_PREFIX_LEN: usize = 16;
/// Longest input accepted before any normalisation (spaces and dashes included).
pub const MAX_INPUT_LEN: usize = 128;

/// Why text is not a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("not an invitation code: wrong length or a symbol outside the code alphabet")]
    InvalidFormat,
    #[error("the code's check symbol does not match: a symbol is mistyped or two are swapped")]
    ChecksumMismatch,
}

/// A well-formed code with a valid check symbol, in canonical form: upper case,
/// no prefix, no separators. Holding one says nothing about whether it exists.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct InvitationCode(String);

impl std::fmt::Debug for InvitationCode {
    // Codes are credentials: never print them by accident.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvitationCode(<redacted>)")
    }
}

impl InvitationCode {
    /// Parses what a person typed: case-insensitive, spaces and dashes ignored,
    /// the configured prefix optional.
    pub fn parse(input: &str, prefix: &str) -> Result<Self, CodeError> {
        if input.len() > MAX_INPUT_LEN {
            return Err(CodeError::InvalidFormat);
        }
        let mut symbols: String =
            input.chars().filter(|c| !matches!(c, ' ' | '-' | '\t')).map(|c| c.to_ascii_uppercase()).collect();
        let prefix = normalize_prefix(prefix);
        if !prefix.is_empty() && symbols.starts_with(&prefix) {
            let stripped = symbols.split_off(prefix.len());
            // Only strip when what is left is still a plausible code; a prefix
            // made of alphabet symbols could otherwise eat a real first symbol.
            if stripped.len() > MIN_RANDOM_SYMBOLS {
                symbols = stripped;
            } else {
                symbols.insert_str(0, &prefix);
            }
        }
        let n = symbols.len();
        if !(MIN_RANDOM_SYMBOLS + 1..=MAX_RANDOM_SYMBOLS + 1).contains(&n) {
            return Err(CodeError::InvalidFormat);
        }
        let mut values = Vec::with_capacity(n);
        for b in symbols.bytes() {
            values.push(symbol_value(b).ok_or(CodeError::InvalidFormat)?);
        }
        if weighted_sum(&values) != 0 {
            return Err(CodeError::ChecksumMismatch);
        }
        Ok(Self(symbols))
    }

    /// A vanity code an operator chose (`LAUNCH-2026`): case and the
    /// separators space, `-`, `_`, `.` are ignored; what is left is 6-32 ASCII
    /// letters and digits (all of them, 0/O and 1/I/L too: it is meant to be
    /// remembered, not copied). It has no check symbol, and it must not look
    /// like a generated code, so a mistyped generated code is still told
    /// apart without a lookup: at most 8 symbols, or at least one of
    /// `0 1 I L O` (which generated codes never contain). Its canonical form
    /// is hashed and sealed like any code.
    pub fn parse_vanity(input: &str) -> Result<Self, String> {
        if input.len() > MAX_INPUT_LEN {
            return Err(format!("must be at most {MAX_INPUT_LEN} bytes"));
        }
        let symbols: String = input
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_' | '.' | '\t'))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if !symbols.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("may hold only ASCII letters and digits (and the separators space, '-', '_', '.')".into());
        }
        if !(MIN_VANITY_SYMBOLS..=MAX_VANITY_SYMBOLS).contains(&symbols.len()) {
            return Err(format!("must be {MIN_VANITY_SYMBOLS} to {MAX_VANITY_SYMBOLS} letters and digits"));
        }
        if !is_vanity(&symbols) {
            return Err("looks like a generated code: use at most 8 symbols, or include 0, 1, I, L or O".into());
        }
        Ok(Self(symbols))
    }

    /// Canonical form: what the database stores and compares.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Display form: prefix, then groups of four joined by dashes.
    pub fn display(&self, prefix: &str) -> String {
        display_form(&self.0, prefix)
    }
}

/// Fewest and most symbols of a vanity code.
pub const MIN_VANITY_SYMBOLS: usize = 6;
pub const MAX_VANITY_SYMBOLS: usize = 32;

/// Whether a canonical code is a vanity code: generated codes are 9-30
/// symbols of `ALPHABET`, so the two sets never meet.
pub fn is_vanity(canonical: &str) -> bool {
    canonical.len() <= MIN_RANDOM_SYMBOLS || canonical.bytes().any(|b| symbol_value(b).is_none())
}

/// Display form of a canonical code string (a vanity code as it is).
pub fn display_form(canonical: &str, prefix: &str) -> String {
    if is_vanity(canonical) {
        return canonical.to_owned();
    }
    let mut out = String::with_capacity(canonical.len() + canonical.len() / 4 + prefix.len() + 1);
    let prefix = normalize_prefix(prefix);
    if !prefix.is_empty() {
        out.push_str(&prefix);
        out.push('-');
    }
    for (i, c) in canonical.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// Upper-cased prefix without separators; configuration validates it.
pub fn normalize_prefix(prefix: &str) -> String {
    prefix.chars().filter(|c| !matches!(c, ' ' | '-')).map(|c| c.to_ascii_uppercase()).collect()
}

/// Checks an operator-supplied prefix: ASCII letters and digits only.
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    let p = normalize_prefix(prefix);
    if p.len() > MAX_PREFIX_LEN {
        return Err(format!("code prefix is longer than {MAX_PREFIX_LEN} characters"));
    }
    if !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("code prefix may hold only ASCII letters and digits (and dashes)".into());
    }
    Ok(())
}

/// Makes new codes of a fixed number of random symbols.
#[derive(Debug, Clone, Copy)]
pub struct CodeGenerator {
    random_symbols: usize,
}

impl CodeGenerator {
    pub fn new(random_symbols: usize) -> Result<Self, String> {
        if !(MIN_RANDOM_SYMBOLS..=MAX_RANDOM_SYMBOLS).contains(&random_symbols) {
            return Err(format!(
                "code length must be between {MIN_RANDOM_SYMBOLS} and {MAX_RANDOM_SYMBOLS} random symbols"
            ));
        }
        Ok(Self { random_symbols })
    }

    /// Bits of entropy per code.
    pub fn entropy_bits(&self) -> f64 {
        self.random_symbols as f64 * f64::from(BASE).log2()
    }

    /// A fresh code from the operating system's CSPRNG.
    pub fn generate(&self) -> Result<InvitationCode, rand::rand_core::OsError> {
        self.generate_from(&mut OsRng)
    }

    /// A code drawn from `rng`. The service only ever passes the OS CSPRNG;
    /// the load generator passes a seeded one, so it can recompute the codes
    /// it seeded instead of storing them.
    pub fn generate_from<R: TryRngCore + ?Sized>(&self, rng: &mut R) -> Result<InvitationCode, R::Error> {
        let mut values = Vec::with_capacity(self.random_symbols + 1);
        let mut buf = [0u8; 64];
        while values.len() < self.random_symbols {
            rng.try_fill_bytes(&mut buf)?;
            // Rejection sampling: 248 = 8 × 31, so bytes below it map evenly.
            for &b in &buf {
                if values.len() == self.random_symbols {
                    break;
                }
                if b < 248 {
                    values.push(u32::from(b) % BASE);
                }
            }
        }
        values.push(check_value(&values));
        let s = values.iter().map(|&v| ALPHABET[v as usize] as char).collect();
        Ok(InvitationCode(s))
    }
}

fn symbol_value(b: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == b).map(|p| p as u32)
}

/// Σ (i+1)·v_i mod 31 over all symbols, check symbol included.
fn weighted_sum(values: &[u32]) -> u32 {
    values.iter().enumerate().fold(0, |acc, (i, &v)| (acc + (i as u32 + 1) * v) % BASE)
}

/// The check value c with Σ (i+1)·d_i + (n+1)·c ≡ 0 (mod 31).
fn check_value(data: &[u32]) -> u32 {
    let partial = weighted_sum(data);
    let weight = data.len() as u32 + 1;
    // weight is invertible mod the prime 31; Fermat: w^-1 = w^29.
    let inverse = (0..BASE - 2).fold(1, |acc, _| acc * weight % BASE);
    (BASE - partial) % BASE * inverse % BASE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator() -> CodeGenerator {
        CodeGenerator::new(DEFAULT_RANDOM_SYMBOLS).expect("default length is valid")
    }

    #[test]
    fn default_codes_have_at_least_64_bits() {
        assert!(generator().entropy_bits() >= 64.0);
    }

    #[test]
    fn generated_codes_parse_back() {
        let g = generator();
        for _ in 0..1000 {
            let code = g.generate().expect("os rng");
            assert_eq!(code.as_str().len(), DEFAULT_RANDOM_SYMBOLS + 1);
            let parsed = InvitationCode::parse(code.as_str(), "").expect("valid code");
            assert_eq!(parsed, code);
        }
    }

    #[test]
    fn alphabet_has_no_look_alikes() {
        for c in b"01ILO" {
            assert!(!ALPHABET.contains(c), "{} must not be in the alphabet", *c as char);
        }
    }

    #[test]
    fn parsing_ignores_case_spaces_dashes_and_prefix() {
        let code = generator().generate().expect("os rng");
        let shown = code.display("inv");
        assert!(shown.starts_with("INV-"));
        let typed = format!(" {} ", shown.to_lowercase().replace('-', " - "));
        assert_eq!(InvitationCode::parse(&typed, "INV").expect("parses"), code);
        assert_eq!(InvitationCode::parse(code.as_str(), "INV").expect("prefix optional"), code);
    }

    #[test]
    fn every_single_substitution_is_caught() {
        let g = generator();
        for _ in 0..50 {
            let code = g.generate().expect("os rng");
            let bytes = code.as_str().as_bytes().to_vec();
            for i in 0..bytes.len() {
                for &sym in ALPHABET {
                    if sym == bytes[i] {
                        continue;
                    }
                    let mut typo = bytes.clone();
                    typo[i] = sym;
                    let typo = String::from_utf8(typo).expect("ascii");
                    assert_eq!(InvitationCode::parse(&typo, ""), Err(CodeError::ChecksumMismatch));
                }
            }
        }
    }

    #[test]
    fn every_adjacent_swap_is_caught() {
        let g = generator();
        for _ in 0..200 {
            let code = g.generate().expect("os rng");
            let bytes = code.as_str().as_bytes().to_vec();
            for i in 0..bytes.len() - 1 {
                if bytes[i] == bytes[i + 1] {
                    continue;
                }
                let mut swapped = bytes.clone();
                swapped.swap(i, i + 1);
                let swapped = String::from_utf8(swapped).expect("ascii");
                assert_eq!(InvitationCode::parse(&swapped, ""), Err(CodeError::ChecksumMismatch));
            }
        }
    }

    #[test]
    fn check_symbol_works_at_every_supported_length() {
        for n in MIN_RANDOM_SYMBOLS..=MAX_RANDOM_SYMBOLS {
            let code = CodeGenerator::new(n).expect("valid").generate().expect("os rng");
            assert!(InvitationCode::parse(code.as_str(), "").is_ok(), "length {n}");
        }
        assert!(CodeGenerator::new(MIN_RANDOM_SYMBOLS - 1).is_err());
        assert!(CodeGenerator::new(MAX_RANDOM_SYMBOLS + 1).is_err());
    }

    #[test]
    fn malformed_input_is_a_format_error() {
        for bad in ["", "ABC", "0000-0000-0000-0000", "ABCD-EFGH-JKMN-PQR!", &"A".repeat(200)] {
            assert_eq!(InvitationCode::parse(bad, ""), Err(CodeError::InvalidFormat), "{bad:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_code() {
        let code = generator().generate().expect("os rng");
        assert!(!format!("{code:?}").contains(code.as_str()));
    }

    #[test]
    fn display_groups_in_fours() {
        assert_eq!(display_form("ABCDEFGHJKMNPQRS", ""), "ABCD-EFGH-JKMN-PQRS");
        assert_eq!(display_form("ABCDEFGHJ", "x"), "X-ABCD-EFGH-J");
    }

    #[test]
    fn vanity_codes_normalise_and_never_look_generated() {
        let code = InvitationCode::parse_vanity("launch-2026").expect("valid");
        assert_eq!(code.as_str(), "LAUNCH2026");
        for same in ["LAUNCH 2026", "Launch_2026", "l.a.u.n.c.h.2026"] {
            assert_eq!(InvitationCode::parse_vanity(same).expect(same), code, "{same}");
        }
        assert_eq!(code.display("INV"), "LAUNCH2026", "shown as it is, without prefix or groups");
        assert!(InvitationCode::parse_vanity("MEETUP").is_ok(), "6 symbols, all in the alphabet: short enough");
        assert!(InvitationCode::parse_vanity("abc12").is_err(), "too short");
        assert!(InvitationCode::parse_vanity(&"A1".repeat(17)).is_err(), "too long");
        assert!(InvitationCode::parse_vanity("café-2026").is_err(), "not ASCII");
        let e = InvitationCode::parse_vanity("BETATESTERS").expect_err("looks generated");
        assert!(e.contains("generated"), "{e}");
        // Never the canonical form of a generated code.
        let generated = CodeGenerator::new(8).expect("8").generate().expect("rng");
        assert!(!is_vanity(generated.as_str()));
        assert!(InvitationCode::parse_vanity(generated.as_str()).is_err());
    }
}
