//! The abuse checks of Redeem and Reserve (docs/design.md, "Abuse
//! controls"): the failed-attempt limit around a call, and, inside its
//! transaction, the IP and disposable-e-mail checks and what a redemption
//! records (its hashed IP prefix, its flags). Each check is `block`, `flag`
//! or `off` (`AbuseSettings`).

use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::crypto::vault::{Purpose, Vault};
use crate::domain::UserId;
use crate::domain::abuse::{AbuseSettings, CheckMode, Flag};
use crate::domain::email::Email;
use crate::domain::error::Error;
use crate::store::{self, abuse, common_path, partitions};

use super::Invitations;

/// Who is attempting: the client's IP and, on Redeem, the invitee.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub ip: Option<IpAddr>,
    pub invitee: Option<UserId>,
}

/// What a refused or flagged check says about the request, for the
/// transaction that redeems or reserves.
pub struct Screening {
    pub flags: Vec<Flag>,
}

impl Invitations {
    pub fn with_abuse(self, abuse: AbuseSettings) -> Self {
        Self { abuse: Arc::new(abuse), ..self }
    }

    pub(super) fn attempt_keys(&self, attempt: &Attempt) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        if let Some(ip) = attempt.ip {
            let prefix = self.abuse.ip_prefix(ip);
            keys.push(self.vault.hash(Purpose::Attempts, &[b"ip\0".as_slice(), &prefix].concat()));
        }
        if let Some(invitee) = &attempt.invitee {
            keys.push(
                self.vault.hash(Purpose::Attempts, &[b"invitee\0".as_slice(), invitee.as_str().as_bytes()].concat()),
            );
        }
        keys
    }

    /// Before a Redeem, CheckCode or Reserve: refuses it when the client IP
    /// or the invitee is over the failed-attempt limit (`block`), or says to
    /// flag it (`flag`). Shared by every replica (the counters are in Postgres).
    pub async fn admit_attempt(&self, attempt: &Attempt) -> Result<bool, Error> {
        let keys = self.attempt_keys(attempt);
        if self.abuse.attempts == CheckMode::Off || keys.is_empty() {
            return Ok(false);
        }
        let now = OffsetDateTime::now_utc();
        let (start, end) = self.abuse.attempt_window_at(now);
        let mut conn = self.statement_conn().await?;
        let failures = abuse::most_failures(&mut conn, &keys, start).await;
        let failures = conn.settled(failures)?;
        if failures < self.abuse.attempt_limit as i32 {
            return Ok(false);
        }
        match self.abuse.attempts {
            CheckMode::Block => Err(Error::TooManyAttempts { retry_after: (end - now).max(time::Duration::SECOND) }),
            CheckMode::Flag | CheckMode::Off => Ok(true),
        }
    }

    /// After a call failed the way guessing fails (unknown or malformed
    /// code, unknown reservation): counts it. Never fails the call itself.
    pub async fn count_failed_attempt(&self, attempt: &Attempt) {
        let keys = self.attempt_keys(attempt);
        if self.abuse.attempts == CheckMode::Off || keys.is_empty() {
            return;
        }
        let (start, _) = self.abuse.attempt_window_at(OffsetDateTime::now_utc());
        let counted = async {
            let mut conn = self.statement_conn().await?;
            let counted = abuse::add_failure(&mut conn, &keys, start).await;
            conn.settled(counted)
        };
        if let Err(e) = counted.await {
            tracing::warn!(error = %e, "could not count a failed attempt");
        }
    }
}

/// Whether an error is a guess that could have hit: a well-formed code (or
/// reservation id) that does not exist. Malformed and mistyped codes are
/// not counted: the check symbol refuses them without a lookup, so they tell
/// a guesser nothing, and honest typos must not lock people out. A flood of
/// random codes still stops: one in 31 passes the check symbol and counts.
pub fn is_guess_failure(error: &Error) -> bool {
    matches!(error, Error::CodeNotFound | Error::NotFound { what: "reservation", .. })
}

fn apply(mode: CheckMode, fired: bool, flag: Flag, refusal: Error, flags: &mut Vec<Flag>) -> Result<(), Error> {
    match (mode, fired) {
        (CheckMode::Block, true) => Err(refusal),
        (CheckMode::Flag, true) => {
            flags.push(flag);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The IP and e-mail checks, inside the transaction: refuses (`block`) or
/// collects flags.
pub(super) async fn screen(
    tx: &mut store::Tx<'_>,
    settings: &AbuseSettings,
    vault: &Vault,
    ip: Option<IpAddr>,
    email: Option<&Email>,
    inviter: Option<&str>,
) -> Result<Screening, Error> {
    let mut flags = Vec::new();
    let disposable = email.is_some_and(|e| settings.disposable_domains.contains(e.domain()));
    apply(settings.disposable_email, disposable, Flag::DisposableEmail, Error::DisposableEmail, &mut flags)?;
    let ip_checks = settings.ip_reuse != CheckMode::Off || (settings.same_ip != CheckMode::Off && inviter.is_some());
    if let (Some(ip), true) = (ip, ip_checks) {
        let hashes = vault.hashes(Purpose::IpPrefix, &settings.ip_prefix(ip));
        let since = OffsetDateTime::now_utc() - settings.ip_window;
        let seen = abuse::ip_seen(tx, &hashes, inviter, since).await?;
        apply(settings.same_ip, seen.inviter, Flag::SameIpAsInviter, Error::SameIpAsInviter, &mut flags)?;
        apply(settings.ip_reuse, seen.reused, Flag::IpReuse, Error::IpAlreadyUsed, &mut flags)?;
    }
    Ok(Screening { flags })
}

/// What a redemption leaves behind for later checks and for admins: its
/// hashed IP prefix (while any IP check is on) and its flags.
pub(super) async fn record(
    tx: &mut store::Tx<'_>,
    settings: &AbuseSettings,
    vault: &Vault,
    ip: Option<IpAddr>,
    invitee: &str,
    flags: &[Flag],
) -> Result<(), sqlx::Error> {
    let ip_checks = settings.ip_reuse != CheckMode::Off || settings.same_ip != CheckMode::Off;
    if let (Some(ip), true) = (ip, ip_checks) {
        let hash = vault.hash(Purpose::IpPrefix, &settings.ip_prefix(ip));
        abuse::insert_redemption_ip(tx, invitee, &hash, vault.current_key_id()).await?;
    }
    if !flags.is_empty() {
        let mut names: Vec<&str> = flags.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        abuse::record_flags(tx, invitee, &names).await?;
    }
    Ok(())
}

/// Drops the days of hashed IPs past the IP window and of counters past
/// theirs (whole partitions), deletes the rest of the day the cutoff falls
/// in, and makes the coming days' partitions: at once, then every
/// `interval`, until shutdown. The checks never read past their windows, so
/// this only keeps the promise that IPs are not kept longer than needed.
pub async fn sweep_abuse_records(pool: sqlx::PgPool, settings: Arc<AbuseSettings>, interval: std::time::Duration) {
    loop {
        let now = OffsetDateTime::now_utc();
        let (window_start, _) = settings.attempt_window_at(now);
        let ips_before = now - settings.ip_window;
        let swept = async {
            let mut conn = pool.acquire().await?;
            let mut days = Vec::new();
            for (table, cutoff) in
                [(partitions::REDEMPTION_IPS, ips_before), (partitions::ATTEMPT_COUNTERS, window_start)]
            {
                table.ensure(&mut conn).await?;
                days.extend(table.drop_expired(&mut conn, cutoff).await?);
            }
            let (ips, counters) = abuse::sweep(&mut conn, ips_before, window_start).await?;
            Ok::<_, sqlx::Error>((days, ips, counters))
        };
        match swept.await {
            Ok((days, 0, 0)) if days.is_empty() => {}
            Ok((days, ips, counters)) => {
                tracing::info!(
                    days = days.len(),
                    ips,
                    counters,
                    "dropped and deleted expired IP hashes and attempt counters"
                )
            }
            Err(e) => tracing::warn!(error = %e, "sweeping abuse records failed; retrying next interval"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// The flags recorded on an invitee's redemption (for a retried Redeem).
pub(super) async fn flags_of(tx: &mut store::Tx<'_>, invitee: &str) -> Result<Vec<String>, sqlx::Error> {
    abuse::redemption_flags(tx, invitee).await
}

fn mode_name(mode: CheckMode) -> &'static str {
    match mode {
        CheckMode::Block => "block",
        CheckMode::Flag => "flag",
        CheckMode::Off => "off",
    }
}

impl Invitations {
    /// What the one-statement Redeem and Reserve need of the abuse checks
    /// for this request (the same checks `admit_attempt`, `screen` and
    /// `record` make on the general path).
    pub(super) fn screening(&self, attempt: &Attempt, email: Option<&Email>) -> common_path::Screening {
        let settings = &self.abuse;
        let now = OffsetDateTime::now_utc();
        let (window_start, _) = settings.attempt_window_at(now);
        let attempt_keys = if settings.attempts == CheckMode::Off { Vec::new() } else { self.attempt_keys(attempt) };
        let disposable = email.is_some_and(|e| settings.disposable_domains.contains(e.domain()));
        let ip_checks = settings.ip_reuse != CheckMode::Off || settings.same_ip != CheckMode::Off;
        let prefix = attempt.ip.filter(|_| ip_checks).map(|ip| settings.ip_prefix(ip));
        common_path::Screening {
            attempt_keys,
            attempt_window: window_start,
            attempt_limit: i32::try_from(settings.attempt_limit).unwrap_or(i32::MAX),
            attempt_mode: mode_name(settings.attempts),
            disposable: (disposable && settings.disposable_email != CheckMode::Off)
                .then(|| mode_name(settings.disposable_email)),
            ip_hashes: prefix.as_ref().map(|p| self.vault.hashes(Purpose::IpPrefix, p)).unwrap_or_default(),
            ip_since: now - settings.ip_window,
            ip_reuse: mode_name(settings.ip_reuse),
            same_ip: mode_name(settings.same_ip),
            ip_record: prefix.as_ref().map(|p| self.vault.hash(Purpose::IpPrefix, p)),
            ip_key_id: self.vault.current_key_id(),
        }
    }

    /// How long a caller over the failed-attempt limit waits.
    pub(super) fn attempt_retry_after(&self) -> time::Duration {
        let now = OffsetDateTime::now_utc();
        let (_, end) = self.abuse.attempt_window_at(now);
        (end - now).max(time::Duration::SECOND)
    }

    /// The domain error for a refusal reason the one-statement calls return
    /// (the ErrorInfo reasons of the refusals they make).
    pub(super) fn refusal(&self, reason: &str) -> Error {
        match reason {
            "CODE_NOT_FOUND" => Error::CodeNotFound,
            "ALREADY_REDEEMED" => Error::AlreadyRedeemed,
            "EXPIRED" => Error::Expired,
            "REVOKED" => Error::Revoked,
            "SELF_INVITE" => Error::SelfInvite,
            "ALREADY_INVITED" => Error::AlreadyInvited,
            "INVITE_CYCLE" => Error::InviteCycle,
            "INVITER_DISABLED" => Error::InviterDisabled,
            "RESERVED" => Error::Reserved,
            "IP_ALREADY_USED" => Error::IpAlreadyUsed,
            "SAME_IP_AS_INVITER" => Error::SameIpAsInviter,
            "DISPOSABLE_EMAIL" => Error::DisposableEmail,
            "TOO_MANY_ATTEMPTS" => Error::TooManyAttempts { retry_after: self.attempt_retry_after() },
            other => Error::Internal(anyhow::anyhow!("the database refused with an unknown reason {other:?}")),
        }
    }
}
