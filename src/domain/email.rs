//! E-mail addresses and the bindings that tie an invitation to one address,
//! one domain, or (for a waitlist admission) one applicant's user id. This
//! module owns normalisation and matching; it stores nothing and knows
//! nothing about invitations beyond the binding kind.
//!
//! Normalisation (docs/design.md, "Bound invitations"): surrounding whitespace
//! is trimmed, the local part is lower-cased, the domain goes through IDNA
//! (UTS #46) to its ASCII form (`bücher.example` → `xn--bcher-kva.example`,
//! which lower-cases it too) and loses a trailing dot. Nothing else is folded:
//! `+tag` subaddresses are not stripped and dots in the local part are not
//! removed, because those are conventions of some mail providers, not of
//! e-mail. So `Alice@Example.COM` matches a binding to `alice@example.com`,
//! while `alice+news@example.com` and `a.lice@example.com` do not.
//!
//! The bound value itself is never stored: a binding keeps
//! `salt (16 bytes) || SHA-256(label || salt || value)`, enough to test a
//! presented address and no more.

use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// Longest address accepted (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest local part (RFC 5321).
pub const MAX_LOCAL_LEN: usize = 64;
const SALT_LEN: usize = 16;
const DIGEST_LEN: usize = SALT_LEN + 32;

/// A syntactically plausible, normalised e-mail address.
#[derive(Clone, PartialEq, Eq)]
pub struct Email {
    local: String,
    domain: String,
}

impl std::fmt::Debug for Email {
    // Addresses are personal data: never print them by accident.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

impl Email {
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err("is required".into());
        }
        if input.len() > MAX_EMAIL_LEN {
            return Err(format!("must be at most {MAX_EMAIL_LEN} bytes"));
        }
        let Some((local, domain)) = input.rsplit_once('@') else {
            return Err("must be an e-mail address (local@domain)".into());
        };
        if local.is_empty() || local.len() > MAX_LOCAL_LEN {
            return Err(format!("the part before @ must be 1-{MAX_LOCAL_LEN} bytes"));
        }
        // Quoted local parts (which may hold spaces or @) are not supported.
        if local.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '"' | '<' | '>')) {
            return Err("the part before @ has a character e-mail addresses cannot have unquoted".into());
        }
        Ok(Self { local: local.to_lowercase(), domain: parse_domain(domain)? })
    }

    /// Empty means absent; anything else must be an address.
    pub fn parse_optional(input: &str) -> Result<Option<Self>, String> {
        if input.trim().is_empty() { Ok(None) } else { Self::parse(input).map(Some) }
    }

    /// The normalised domain (ASCII, lower case).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The normalised address, `local@domain`.
    pub fn normalized(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }
}

/// Normalises a domain: trimmed, trailing dot dropped, IDNA to ASCII (which
/// lower-cases), at least two labels of letters, digits and hyphens.
pub fn parse_domain(input: &str) -> Result<String, String> {
    let input = input.trim();
    let input = input.strip_suffix('.').unwrap_or(input);
    if input.is_empty() {
        return Err("the domain is required".into());
    }
    let ascii = idna::domain_to_ascii_strict(input).map_err(|_| "is not a valid domain name".to_owned())?;
    if ascii.is_empty() || !ascii.contains('.') || ascii.split('.').any(str::is_empty) {
        return Err("the domain must have at least two labels, e.g. example.com".into());
    }
    Ok(ascii)
}

/// What a bound invitation is bound to (stored as the Postgres enum
/// `invitation_binding`: store::rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    /// One address.
    Email,
    /// Any address at one domain (exactly that domain, not its subdomains).
    Domain,
    /// One invitee user id: the applicant a waitlist entry was admitted for.
    Applicant,
}

/// A binding requested at mint time: the kind and the normalised value.
#[derive(Clone)]
pub struct Binding {
    kind: BindingKind,
    value: String,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Binding({:?}, <redacted>)", self.kind)
    }
}

impl Binding {
    pub fn email(email: &Email) -> Self {
        Self { kind: BindingKind::Email, value: email.normalized() }
    }

    pub fn domain(domain: String) -> Self {
        Self { kind: BindingKind::Domain, value: domain }
    }

    /// Redeemable only by the invitee with this user id (ids compare
    /// exactly, as everywhere in the service).
    pub fn applicant(user_id: &str) -> Self {
        Self { kind: BindingKind::Applicant, value: user_id.to_owned() }
    }

    pub fn kind(&self) -> BindingKind {
        self.kind
    }

    /// A fresh salted digest of the value (what the database keeps).
    pub fn digest(&self) -> Result<Vec<u8>, rand::rand_core::OsError> {
        let mut salt = [0u8; SALT_LEN];
        rand::rngs::OsRng.try_fill_bytes(&mut salt)?;
        Ok(digest(self.kind, &salt, &self.value))
    }
}

fn digest(kind: BindingKind, salt: &[u8], value: &str) -> Vec<u8> {
    let label: &[u8] = match kind {
        BindingKind::Email => b"invitations/binding/email\0",
        BindingKind::Domain => b"invitations/binding/domain\0",
        // migrations/0064 computes the same digest in SQL for invitations
        // admitted before this kind existed.
        BindingKind::Applicant => b"invitations/binding/applicant\0",
    };
    let hash = Sha256::new().chain_update(label).chain_update(salt).chain_update(value.as_bytes()).finalize();
    let mut out = Vec::with_capacity(DIGEST_LEN);
    out.extend_from_slice(salt);
    out.extend_from_slice(&hash);
    out
}

/// Whether `email` satisfies an address binding stored as (`kind`, `stored`
/// digest). An applicant binding is not about addresses: any (or no) address
/// satisfies it here, and [`admits_user`] decides.
pub fn admits(kind: BindingKind, stored: &[u8], email: &Email) -> bool {
    let value = match kind {
        BindingKind::Email => email.normalized(),
        BindingKind::Domain => email.domain().to_owned(),
        BindingKind::Applicant => return true,
    };
    matches(kind, stored, &value)
}

/// Whether the invitee `user_id` satisfies a binding stored as (`kind`,
/// `stored` digest): always for address bindings, only the bound id for an
/// applicant binding.
pub fn admits_user(kind: BindingKind, stored: &[u8], user_id: &str) -> bool {
    match kind {
        BindingKind::Email | BindingKind::Domain => true,
        BindingKind::Applicant => matches(kind, stored, user_id),
    }
}

fn matches(kind: BindingKind, stored: &[u8], value: &str) -> bool {
    stored.len() == DIGEST_LEN && digest(kind, &stored[..SALT_LEN], value) == stored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(s: &str) -> Email {
        Email::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalisation_trims_lowercases_and_punycodes() {
        let e = email("  Alice.Smith@Example.COM. ");
        assert_eq!(e.normalized(), "alice.smith@example.com");
        assert_eq!(email("bob@Bücher.Example").domain(), "xn--bcher-kva.example");
        assert_eq!(email("bob@xn--bcher-kva.example"), email("BOB@bücher.example"));
    }

    #[test]
    fn subaddresses_and_dots_are_kept() {
        assert_ne!(email("alice+news@example.com"), email("alice@example.com"));
        assert_ne!(email("a.lice@example.com"), email("alice@example.com"));
    }

    #[test]
    fn bad_addresses_are_refused() {
        for bad in [
            "",
            "   ",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "alice@exa mple.com",
            "al ice@example.com",
            "alice@@example.com",
            "alice@-example.com",
            "alice@example..com",
            "alice@[127.0.0.1]",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert!(Email::parse(&format!("a@{}.com", "b".repeat(250))).is_err());
        assert_eq!(Email::parse_optional(" ").expect("empty is absent"), None);
    }

    #[test]
    fn email_binding_matches_case_insensitively_only_the_same_address() {
        let bound = Binding::email(&email("Alice@Example.com"));
        let d = bound.digest().expect("os rng");
        assert!(!String::from_utf8_lossy(&d).contains("alice"), "the digest does not hold the address");
        assert!(admits(BindingKind::Email, &d, &email("ALICE@example.COM")));
        assert!(!admits(BindingKind::Email, &d, &email("alice+x@example.com")));
        assert!(!admits(BindingKind::Email, &d, &email("bob@example.com")));
        assert!(!admits(BindingKind::Domain, &d, &email("alice@example.com")), "kinds do not cross");
    }

    #[test]
    fn applicant_binding_matches_only_that_user_id_and_ignores_addresses() {
        let bound = Binding::applicant("applicant-7");
        let d = bound.digest().expect("digest");
        assert!(admits_user(BindingKind::Applicant, &d, "applicant-7"));
        assert!(!admits_user(BindingKind::Applicant, &d, "applicant-70"));
        assert!(!admits_user(BindingKind::Applicant, &d, "Applicant-7"), "user ids compare exactly");
        assert!(admits(BindingKind::Applicant, &d, &email("anyone@example.com")));
        assert!(admits_user(BindingKind::Email, &d, "anyone"), "address bindings do not look at the invitee");
    }

    #[test]
    fn applicant_digest_is_the_one_migration_0064_computes() {
        // salt || SHA-256('invitations/binding/applicant' || 0x00 || salt || user_id)
        let salt = [7u8; SALT_LEN];
        let d = digest(BindingKind::Applicant, &salt, "u1");
        let mut input = b"invitations/binding/applicant".to_vec();
        input.push(0);
        input.extend_from_slice(&salt);
        input.extend_from_slice(b"u1");
        assert_eq!(&d[..SALT_LEN], &salt);
        assert_eq!(&d[SALT_LEN..], Sha256::digest(&input).as_slice());
    }

    #[test]
    fn domain_binding_matches_any_local_part_at_exactly_that_domain() {
        let bound = Binding::domain(parse_domain("Example.com").expect("domain"));
        let d = bound.digest().expect("os rng");
        assert!(admits(BindingKind::Domain, &d, &email("anyone+tag@EXAMPLE.com")));
        assert!(!admits(BindingKind::Domain, &d, &email("anyone@mail.example.com")));
        assert!(!admits(BindingKind::Domain, &d, &email("anyone@example.org")));
    }

    #[test]
    fn digests_are_salted() {
        let bound = Binding::email(&email("alice@example.com"));
        assert_ne!(bound.digest().expect("rng"), bound.digest().expect("rng"));
    }
}
