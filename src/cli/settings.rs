//! Every `*Args → *Settings` conversion: the checked settings the layers
//! below take, built from clap types they never see. The messages name the
//! flags, which only this layer knows.

use std::time::Duration;

use super::args::{
    AbuseArgs, CheckMode, ConversionArgs, EventArgs, FlaggedMode, LogFormat, MemberArgs, QuotaArgs, ReviewMode,
    ServeArgs, TlsArgs, WaitlistArgs,
};
use crate::app;
use crate::crypto::secret::Secrets;
use crate::domain::abuse::{self, AbuseSettings, DisposableDomains};
use crate::domain::attributes::Attributes;
use crate::domain::code::{CodeGenerator, validate_prefix};
use crate::domain::conversion::{ConversionKind, parse_reward_rules};
use crate::domain::events::CodeDisclosure;
use crate::grpc::auth::Callers;
use crate::grpc::convert::View;
use crate::grpc::tls::TlsSettings;
use crate::outbox::Maintenance;
use crate::outbox::relay::{MIN_BACKOFF, RelaySettings};
use crate::service::{
    ConversionSettings, Earn, Flagged, MAX_GRANT, MemberLimits, Quotas, ReservationSettings, WaitlistSettings,
};
use crate::telemetry;

impl From<CheckMode> for abuse::CheckMode {
    fn from(mode: CheckMode) -> Self {
        match mode {
            CheckMode::Block => abuse::CheckMode::Block,
            CheckMode::Flag => abuse::CheckMode::Flag,
            CheckMode::Off => abuse::CheckMode::Off,
        }
    }
}

impl From<LogFormat> for telemetry::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Text => telemetry::LogFormat::Text,
            LogFormat::Json => telemetry::LogFormat::Json,
        }
    }
}

impl From<&TlsArgs> for TlsSettings {
    fn from(args: &TlsArgs) -> Self {
        TlsSettings {
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
            tls_client_ca: args.tls_client_ca.clone(),
        }
    }
}

/// The abuse settings, checked.
pub fn abuse(args: &AbuseArgs) -> Result<AbuseSettings, String> {
    let ip_window = time::Duration::try_from(args.abuse_ip_window).map_err(|e| e.to_string())?;
    let attempt_window = time::Duration::try_from(args.attempt_window).map_err(|e| e.to_string())?;
    if ip_window < time::Duration::SECOND || attempt_window < time::Duration::SECOND {
        return Err("the abuse windows must be at least 1s".into());
    }
    if args.attempt_limit == 0 {
        return Err("--attempt-limit must be at least 1".into());
    }
    Ok(AbuseSettings {
        ip_reuse: args.abuse_ip_reuse.into(),
        same_ip: args.abuse_same_ip.into(),
        ip_window,
        ipv4_prefix: args.abuse_ipv4_prefix,
        ipv6_prefix: args.abuse_ipv6_prefix,
        disposable_email: args.abuse_disposable_email.into(),
        disposable_domains: DisposableDomains::with_extra(&args.disposable_domains)?,
        attempts: args.abuse_attempts.into(),
        attempt_limit: args.attempt_limit,
        attempt_window,
    })
}

/// The quota policies, checked.
pub fn quotas(args: &QuotaArgs) -> Result<Quotas, String> {
    let earn = if args.earn_interval.is_zero() {
        None
    } else if args.earn_cap == 0 {
        return Err("--earn-interval needs --earn-cap of at least 1".into());
    } else if args.earn_interval < Duration::from_secs(1) {
        return Err("--earn-interval must be at least 1s".into());
    } else {
        Some(Earn { interval: args.earn_interval, cap: args.earn_cap })
    };
    for (flag, value) in [("--welcome-grant", args.welcome_grant), ("--refill-to", args.refill_to)] {
        if value > MAX_GRANT {
            return Err(format!("{flag} must be at most {MAX_GRANT}"));
        }
    }
    let grant_attributes =
        Attributes::parse_pairs(&args.grant_attributes).map_err(|e| format!("--grant-attributes: {e}"))?;
    Ok(Quotas { welcome: args.welcome_grant, refill_to: args.refill_to, earn, grant_attributes })
}

/// What members may create (CreateMemberInvitation), checked.
pub fn member_limits(args: &MemberArgs) -> Result<MemberLimits, String> {
    let duration = |flag: &str, d: Duration| time::Duration::try_from(d).map_err(|e| format!("{flag}: {e}"));
    if args.member_max_uses == 0 || args.member_max_uses > crate::domain::MAX_USES {
        return Err(format!("--member-max-uses must be 1 to {}", crate::domain::MAX_USES));
    }
    if args.member_rate > 0 && args.member_rate_period < Duration::from_secs(1) {
        return Err("--member-rate-period must be at least 1s".into());
    }
    let mut attribute_keys = std::collections::BTreeSet::new();
    for key in &args.member_attribute_keys {
        Attributes::parse_pairs(&[format!("{key}=")]).map_err(|e| format!("--member-attribute-keys: {e}"))?;
        attribute_keys.insert(key.clone());
    }
    Ok(MemberLimits {
        enabled: args.member_invitations,
        max_uses: args.member_max_uses,
        max_ttl: (!args.member_max_ttl.is_zero())
            .then(|| duration("--member-max-ttl", args.member_max_ttl))
            .transpose()?,
        min_age: duration("--member-min-age", args.member_min_age)?,
        rate: (args.member_rate > 0)
            .then(|| duration("--member-rate-period", args.member_rate_period).map(|p| (args.member_rate, p)))
            .transpose()?,
        max_unspent: (args.member_max_unspent > 0).then_some(args.member_max_unspent),
        attribute_keys,
    })
}

/// Conversions and rewards, checked: every rule names a configured kind.
pub fn conversions(args: &ConversionArgs) -> Result<ConversionSettings, String> {
    let mut kinds = Vec::new();
    for kind in args.conversion_kinds.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind = ConversionKind::parse(kind).map_err(|e| format!("--conversion-kinds: {kind:?} {e}"))?;
        if kinds.contains(&kind) {
            return Err(format!("--conversion-kinds: {:?} is listed twice", kind.as_str()));
        }
        kinds.push(kind);
    }
    let rules = parse_reward_rules(&args.reward_rule).map_err(|e| format!("--reward-rule: {e}"))?;
    if let Some(kind) = rules.keys().find(|k| !kinds.contains(k)) {
        return Err(format!("--reward-rule: {:?} is not one of --conversion-kinds", kind.as_str()));
    }
    if args.reward_cap > 0 && args.reward_cap_period < Duration::from_secs(1) {
        return Err("--reward-cap-period must be at least 1s".into());
    }
    Ok(ConversionSettings {
        kinds,
        rules,
        cap: args.reward_cap,
        cap_period: args.reward_cap_period,
        hold: args.reward_hold,
        flagged: match args.reward_flagged {
            FlaggedMode::Grant => Flagged::Grant,
            FlaggedMode::Hold => Flagged::Hold,
            FlaggedMode::Deny => Flagged::Deny,
        },
    })
}

/// The waitlist's settings.
pub fn waitlist(args: &WaitlistArgs) -> Result<WaitlistSettings, String> {
    Ok(WaitlistSettings {
        review_required: args.waitlist_review == ReviewMode::Required,
        places_per_referral: args.waitlist_referral_bump,
        places_per_redeemed: args.waitlist_redeem_bump,
        max_bump: args.waitlist_max_bump,
        reapply_after: time::Duration::try_from(args.waitlist_reapply_after)
            .map_err(|e| format!("--waitlist-reapply-after: {e}"))?,
    })
}

/// Every setting of `serve`, checked, in the order the operator would fix
/// them (each message names its flag).
pub fn serve(args: ServeArgs) -> anyhow::Result<app::Settings> {
    let codes = CodeGenerator::new(args.code_length).map_err(anyhow::Error::msg)?;
    validate_prefix(&args.code_prefix).map_err(anyhow::Error::msg)?;
    if !args.link_template.contains("{code}") {
        anyhow::bail!("the link template must contain {{code}}");
    }
    let secrets = Secrets::parse(&args.secrets.secret, &args.secrets.previous_secrets).map_err(anyhow::Error::msg)?;
    let callers = Callers::parse(&args.auth.caller_tokens, &args.auth.client_identities).map_err(anyhow::Error::msg)?;
    if callers.has_identities() && args.tls.tls_client_ca.is_none() {
        anyhow::bail!("--client-identities needs --tls-client-ca (client certificates are verified against it)");
    }
    let reservations = reservations(&args)?;
    let code_disclosure = args
        .events
        .events_include_codes
        .then(|| CodeDisclosure { code_prefix: args.code_prefix.clone(), link_template: args.link_template.clone() });
    Ok(app::Settings {
        codes,
        secrets,
        access: app::Access {
            callers,
            tls: (&args.tls).into(),
            insecure_allow_unauthenticated: args.auth.insecure_allow_unauthenticated,
            reflection: args.reflection,
            reflection_public: args.auth.reflection_public,
        },
        database: app::Database {
            url: args.database.database_url,
            read_urls: args
                .database_read_url
                .iter()
                .map(|u| u.trim())
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect(),
            max_connections: args.database.db_max_connections,
            acquire_timeout: args.database.db_acquire_timeout,
            migrate: args.migrate,
            max_replica_lag: args.max_replica_lag,
            replica_check_interval: args.replica_check_interval,
            health_interval: args.health_interval,
        },
        abuse: abuse(&args.abuse).map_err(anyhow::Error::msg)?,
        reservations,
        quotas: quotas(&args.quotas).map_err(anyhow::Error::msg)?,
        relay: relay(&args.events)?,
        conversions: conversions(&args.conversions).map_err(anyhow::Error::msg)?,
        waitlist: waitlist(&args.waitlist).map_err(anyhow::Error::msg)?,
        member_limits: member_limits(&args.members).map_err(anyhow::Error::msg)?,
        code_disclosure,
        outbox: Maintenance {
            interval: args.events.outbox_stats_interval.max(Duration::from_millis(10)),
            retention: args.events.outbox_retention,
        },
        background: app::Background {
            reservation_sweep: args.reservation_sweep_interval,
            expiry_sweep: args.expiry_sweep_interval,
            earn_grant: args.quotas.earn_grant_interval.max(Duration::from_millis(10)),
            reward_grant: args.conversions.reward_grant_interval.max(Duration::from_millis(10)),
            graph_fold: args.graph_fold_interval,
            history_upkeep: args.history_upkeep_interval.max(Duration::from_millis(10)),
            history_retention: args.history_retention,
            request_id_retention: Some(args.request_id_retention).filter(|d| !d.is_zero()),
        },
        limits: app::Limits {
            max_concurrent_calls: args.limits.max_concurrent_calls,
            max_connections: args.limits.max_connections,
            max_call_time: args.limits.max_call_time,
            max_request_bytes: args.limits.max_request_bytes,
        },
        lifecycle: app::Lifecycle {
            health_listen: args.health_listen,
            shutdown_delay: args.shutdown_delay,
            drain_timeout: args.drain_timeout,
        },
        view: View {
            code_prefix: args.code_prefix,
            link_template: args.link_template,
            vanity_codes: args.vanity_codes,
        },
    })
}

fn reservations(args: &ServeArgs) -> anyhow::Result<ReservationSettings> {
    let default_ttl = time::Duration::try_from(args.reservation_ttl)?;
    let max_ttl = time::Duration::try_from(args.reservation_max_ttl)?;
    if default_ttl.is_zero() || default_ttl > max_ttl {
        anyhow::bail!("the reservation ttl must be positive and at most the reservation max ttl");
    }
    Ok(ReservationSettings { default_ttl, max_ttl })
}

/// The relay settings, when a broker is configured.
pub fn relay(args: &EventArgs) -> anyhow::Result<Option<RelaySettings>> {
    let Some(nats_url) = args.nats_url.clone().filter(|u| !u.trim().is_empty()) else { return Ok(None) };
    let prefix = args.nats_subject_prefix.trim_end_matches('.').to_owned();
    if prefix.is_empty() || prefix.split('.').any(|t| t.is_empty() || t.contains(['*', '>', ' '])) {
        anyhow::bail!("--nats-subject-prefix must be dot-separated tokens without wildcards or spaces");
    }
    if args.nats_stream.is_empty() || args.nats_stream.contains(['.', '*', '>', ' ', '/', '\\']) {
        anyhow::bail!("--nats-stream must be a JetStream stream name (no dots, spaces or wildcards)");
    }
    if args.events_source.trim().is_empty() {
        anyhow::bail!("--events-source (CloudEvents ce-source) must not be empty");
    }
    if args.outbox_batch_size == 0 {
        anyhow::bail!("--outbox-batch-size must be positive");
    }
    Ok(Some(RelaySettings {
        nats_url,
        stream: args.nats_stream.clone(),
        subject_prefix: prefix,
        duplicate_window: args.nats_duplicate_window,
        publish_timeout: args.nats_publish_timeout,
        source: args.events_source.clone(),
        batch_size: args.outbox_batch_size,
        poll_interval: args.outbox_poll_interval,
        max_backoff: args.outbox_max_backoff.max(MIN_BACKOFF),
        #[cfg(feature = "test-hooks")]
        crash_after_publish: args.outbox_test_crash_after_publish,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};

    fn events() -> EventArgs {
        use clap::Parser;
        let cli = Cli::parse_from([
            "invitations",
            "serve",
            "--database-url",
            "postgres://x/y",
            "--secret",
            "a-test-secret-that-is-long-enough-0123",
        ]);
        match cli.command {
            Command::Serve(serve) => serve.events,
            _ => unreachable!(),
        }
    }

    #[test]
    fn no_url_means_no_relay() {
        assert!(relay(&events()).expect("valid").is_none());
    }

    #[test]
    fn subjects_and_names_are_checked() {
        let mut a = events();
        a.nats_url = Some("nats://127.0.0.1:4222".into());
        let s = relay(&a).expect("valid").expect("relay on");
        assert_eq!(s.subject("reservation.lapsed"), "invitations.v1.reservation.lapsed");
        for bad in ["", "a..b", "a.*", "a.>", "a b"] {
            a.nats_subject_prefix = bad.into();
            assert!(relay(&a).is_err(), "{bad:?} accepted");
        }
        a.nats_subject_prefix = "acme.invites".into();
        a.nats_stream = "A.B".into();
        assert!(relay(&a).is_err());
    }

    fn quota_args(welcome: u32, refill: u32, earn_interval: Duration, earn_cap: u32) -> QuotaArgs {
        QuotaArgs {
            welcome_grant: welcome,
            refill_to: refill,
            earn_interval,
            earn_cap,
            earn_grant_interval: Duration::from_secs(60),
            grant_attributes: Vec::new(),
        }
    }

    #[test]
    fn grant_attributes_are_checked() {
        let mut args = quota_args(1, 0, Duration::ZERO, 0);
        args.grant_attributes = vec!["source=welcome".into(), "group=beta".into()];
        let q = quotas(&args).expect("valid");
        assert_eq!(q.grant_attributes.keys().collect::<Vec<_>>(), ["group", "source"]);
        args.grant_attributes = vec!["bad key=1".into()];
        assert!(quotas(&args).expect_err("bad key").starts_with("--grant-attributes"));
    }

    #[test]
    fn every_policy_is_off_by_default() {
        let quotas = quotas(&quota_args(0, 0, Duration::ZERO, 0)).expect("valid");
        assert_eq!((quotas.welcome, quotas.refill_to), (0, 0));
        assert!(quotas.earn.is_none());
    }

    #[test]
    fn earning_needs_a_cap_and_a_sensible_interval() {
        let hour = Duration::from_secs(3600);
        assert!(quotas(&quota_args(0, 0, hour, 0)).is_err(), "no cap");
        assert!(quotas(&quota_args(0, 0, Duration::from_millis(500), 3)).is_err(), "below a second");
        let earn = quotas(&quota_args(0, 0, hour, 3)).expect("valid").earn.expect("on");
        assert_eq!((earn.interval, earn.cap), (hour, 3));
        assert_eq!(earn.interval_secs(), 3600.0);
    }

    #[test]
    fn grants_are_bounded() {
        assert!(quotas(&quota_args(MAX_GRANT, MAX_GRANT, Duration::ZERO, 0)).is_ok());
        assert!(quotas(&quota_args(MAX_GRANT + 1, 0, Duration::ZERO, 0)).is_err());
        assert!(quotas(&quota_args(0, MAX_GRANT + 1, Duration::ZERO, 0)).is_err());
    }

    fn conversion_args(kinds: &str, rules: &str, cap: u32) -> ConversionArgs {
        ConversionArgs {
            conversion_kinds: kinds.into(),
            reward_rule: rules.into(),
            reward_cap: cap,
            reward_cap_period: Duration::from_secs(86_400),
            reward_hold: Duration::ZERO,
            reward_grant_interval: Duration::from_secs(60),
            reward_flagged: FlaggedMode::Grant,
        }
    }

    #[test]
    fn conversions_are_off_by_default_and_rules_name_configured_kinds() {
        let off = conversions(&conversion_args("", "", 0)).expect("valid");
        assert!(off.kinds.is_empty() && off.rules.is_empty());
        let on = conversions(&conversion_args("activated, paid", "activated=1:1", 5)).expect("valid");
        let kinds: Vec<&str> = on.kinds.iter().map(ConversionKind::as_str).collect();
        assert_eq!((kinds, on.rules.len(), on.cap), (vec!["activated", "paid"], 1, 5));
        for (kinds, rules) in [("activated", "paid=1:1"), ("activated,activated", ""), ("Activated", ""), ("a", "a=x")]
        {
            assert!(conversions(&conversion_args(kinds, rules, 0)).is_err(), "{kinds:?} {rules:?}");
        }
        let mut short = conversion_args("a", "a=1:1", 1);
        short.reward_cap_period = Duration::from_millis(10);
        assert!(conversions(&short).is_err(), "a cap period below a second");
    }
}
