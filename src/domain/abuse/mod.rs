//! Abuse controls on Redeem and Reserve, as pure logic: the settings, the
//! IP prefix a client address counts as, the disposable-domain list, and the
//! flags a redemption can carry. The database side (what was seen, counters)
//! is `store::abuse`; the checks run in `service::abuse`.

use std::collections::HashSet;
use std::net::IpAddr;

/// What an abuse check does when it fires: `Block` refuses the call, `Flag`
/// allows it and records the signal on the redemption, `Off` does not check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckMode {
    Block,
    Flag,
    Off,
}

/// The bundled list of disposable e-mail domains.
const BUNDLED_DOMAINS: &str = include_str!("disposable_domains.txt");

/// A signal recorded on a redemption (and shown to admins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flag {
    /// Another redemption came from the same IP prefix within the window.
    IpReuse,
    /// The invitee redeemed from the IP prefix the inviter joined from.
    SameIpAsInviter,
    /// The e-mail address is at a disposable domain.
    DisposableEmail,
    /// The client IP or invitee was over the failed-attempt limit.
    AttemptLimit,
}

impl Flag {
    pub fn name(self) -> &'static str {
        match self {
            Flag::IpReuse => "IP_REUSE",
            Flag::SameIpAsInviter => "SAME_IP_AS_INVITER",
            Flag::DisposableEmail => "DISPOSABLE_EMAIL",
            Flag::AttemptLimit => "ATTEMPT_LIMIT",
        }
    }
}

/// Disposable domains, normalised like e-mail domains (IDNA ASCII, lower case).
#[derive(Debug, Clone, Default)]
pub struct DisposableDomains(HashSet<String>);

impl DisposableDomains {
    /// The bundled list plus `extra` (comma- or whitespace-separated).
    pub fn with_extra(extra: &str) -> Result<Self, String> {
        let mut set = HashSet::new();
        let bundled = BUNDLED_DOMAINS.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let extra = extra.split(|c: char| c == ',' || c.is_whitespace()).filter(|d| !d.is_empty());
        for domain in bundled.chain(extra) {
            let domain = domain.trim_start_matches('@').trim_start_matches("*.");
            set.insert(
                crate::domain::email::parse_domain(domain).map_err(|e| format!("disposable domain {domain:?}: {e}"))?,
            );
        }
        Ok(Self(set))
    }

    /// Whether a normalised domain is listed, or is a subdomain of one listed.
    pub fn contains(&self, domain: &str) -> bool {
        let mut rest = domain;
        loop {
            if self.0.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) if parent.contains('.') => rest = parent,
                _ => return false,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The abuse settings, validated.
#[derive(Debug, Clone)]
pub struct AbuseSettings {
    pub ip_reuse: CheckMode,
    pub same_ip: CheckMode,
    pub ip_window: time::Duration,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub disposable_email: CheckMode,
    pub disposable_domains: DisposableDomains,
    pub attempts: CheckMode,
    pub attempt_limit: u32,
    pub attempt_window: time::Duration,
}

impl Default for AbuseSettings {
    /// Every check off: what the library gives when nothing is configured.
    fn default() -> Self {
        Self {
            ip_reuse: CheckMode::Off,
            same_ip: CheckMode::Off,
            ip_window: time::Duration::days(30),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            disposable_email: CheckMode::Off,
            disposable_domains: DisposableDomains::default(),
            attempts: CheckMode::Off,
            attempt_limit: 5,
            attempt_window: time::Duration::hours(1),
        }
    }
}

impl AbuseSettings {
    /// The bytes an address counts as: its family, prefix length and the
    /// address with the host bits cleared (what is hashed and stored).
    pub fn ip_prefix(&self, ip: IpAddr) -> Vec<u8> {
        match ip {
            IpAddr::V4(v4) => masked(b'4', &v4.octets(), self.ipv4_prefix),
            // An IPv4-mapped IPv6 address is the IPv4 client it stands for.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => masked(b'4', &v4.octets(), self.ipv4_prefix),
                None => masked(b'6', &v6.octets(), self.ipv6_prefix),
            },
        }
    }

    /// Start of the fixed attempt window `now` falls in, and its end.
    pub fn attempt_window_at(&self, now: time::OffsetDateTime) -> (time::OffsetDateTime, time::OffsetDateTime) {
        let len = self.attempt_window.whole_seconds().max(1);
        let start = now.unix_timestamp().div_euclid(len) * len;
        let start = time::OffsetDateTime::from_unix_timestamp(start).unwrap_or(now);
        (start, start + self.attempt_window)
    }
}

fn masked(family: u8, octets: &[u8], prefix: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + octets.len());
    out.push(family);
    out.push(prefix);
    let mut bits = usize::from(prefix);
    for &o in octets {
        let keep = bits.min(8);
        out.push(if keep == 0 { 0 } else { o & (0xFFu8 << (8 - keep)) });
        bits -= keep;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_domains_and_their_subdomains_match() {
        let d = DisposableDomains::with_extra("Example-Burner.TEST, bücher-wegwerf.example").expect("valid");
        assert!(d.contains("mailinator.com"));
        assert!(d.contains("eu.mailinator.com"), "subdomain");
        assert!(d.contains("a.b.mailinator.com"), "deeper subdomain");
        assert!(d.contains("example-burner.test"), "configured, case-folded");
        let punycode = crate::domain::email::parse_domain("BÜCHER-wegwerf.example").expect("valid");
        assert!(punycode.starts_with("xn--") && d.contains(&punycode), "configured in Unicode, matched in punycode");
        assert!(d.contains(&format!("mail.{punycode}")));
        assert!(!d.contains("notmailinator.com"));
        assert!(!d.contains("com"));
        assert!(!d.contains("gmail.com"));
        assert!(d.len() > 50);
        assert!(DisposableDomains::with_extra("not a domain!").is_err());
    }

    #[test]
    fn e_mail_domains_are_normalised_before_matching() {
        let d = DisposableDomains::with_extra("").expect("valid");
        let email = crate::domain::email::Email::parse("Someone@MAILINATOR.com.").expect("valid");
        assert!(d.contains(email.domain()));
    }

    #[test]
    fn prefixes_clear_host_bits() {
        let mut s = AbuseSettings { ipv4_prefix: 24, ..AbuseSettings::default() };
        let a = s.ip_prefix("203.0.113.7".parse().expect("ip"));
        assert_eq!(a, s.ip_prefix("203.0.113.200".parse().expect("ip")));
        assert_ne!(a, s.ip_prefix("203.0.114.7".parse().expect("ip")));
        assert_eq!(a, s.ip_prefix("::ffff:203.0.113.9".parse().expect("ip")), "IPv4-mapped");
        s.ipv4_prefix = 32;
        assert_ne!(s.ip_prefix("203.0.113.7".parse().expect("ip")), s.ip_prefix("203.0.113.8".parse().expect("ip")));
        let v6 = s.ip_prefix("2001:db8:1:2:aaaa::1".parse().expect("ip"));
        assert_eq!(v6, s.ip_prefix("2001:db8:1:2:bbbb::9".parse().expect("ip")), "same /64");
        assert_ne!(v6, s.ip_prefix("2001:db8:1:3::1".parse().expect("ip")));
        s.ipv6_prefix = 128;
        assert_ne!(
            s.ip_prefix("2001:db8:1:2::1".parse().expect("ip")),
            s.ip_prefix("2001:db8:1:2::2".parse().expect("ip"))
        );
        s.ipv4_prefix = 20;
        assert_eq!(masked(b'4', &[10, 1, 0xFF, 1], 20), vec![b'4', 20, 10, 1, 0xF0, 0]);
    }

    #[test]
    fn attempt_windows_are_fixed_slots() {
        let s = AbuseSettings { attempt_window: time::Duration::hours(1), ..AbuseSettings::default() };
        let t = time::OffsetDateTime::from_unix_timestamp(7_200 + 1_234).expect("time");
        let (start, end) = s.attempt_window_at(t);
        assert_eq!(start.unix_timestamp(), 7_200);
        assert_eq!(end.unix_timestamp(), 10_800);
    }
}
