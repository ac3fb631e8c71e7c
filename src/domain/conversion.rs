//! Conversion kinds and reward rules (docs/design.md, "Conversions and
//! rewards"): the names an operator gives qualifying actions, and what a
//! conversion of one earns. Parsing only; the service applies them.

use std::collections::BTreeMap;

/// Longest kind name, in bytes.
pub const MAX_KIND_LEN: usize = 64;
/// Most invitations one side of a reward gets.
pub const MAX_REWARD: u32 = 100;

/// An operator-defined kind (`activated`, `paid`): 1-64 of `a-z 0-9 _ - .`,
/// starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversionKind(String);

impl ConversionKind {
    pub fn parse(value: &str) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.');
        if value.is_empty() || value.len() > MAX_KIND_LEN {
            return Err(format!("must be 1 to {MAX_KIND_LEN} bytes"));
        }
        if !value.starts_with(|c: char| c.is_ascii_lowercase()) || !value.chars().all(ok_char) {
            return Err("must be lower-case letters, digits, `_`, `-` or `.`, starting with a letter".into());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a conversion of one kind earns: invitations for the inviter and
/// for the converted member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewardRule {
    pub inviter: u32,
    pub member: u32,
}

/// `activated=1:1,paid=2:0`: per kind, the inviter's and the member's
/// invitations. Empty: no rules.
pub fn parse_reward_rules(value: &str) -> Result<BTreeMap<ConversionKind, RewardRule>, String> {
    let mut rules = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (kind, counts) = item.split_once('=').ok_or_else(|| format!("{item:?} is not KIND=INVITER:MEMBER"))?;
        let kind = ConversionKind::parse(kind.trim()).map_err(|e| format!("kind {kind:?} {e}"))?;
        let (inviter, member) = counts.split_once(':').ok_or_else(|| format!("{item:?} is not KIND=INVITER:MEMBER"))?;
        let count = |s: &str| -> Result<u32, String> {
            let n: u32 = s.trim().parse().map_err(|_| format!("{s:?} in {item:?} is not a count"))?;
            if n > MAX_REWARD {
                return Err(format!("{item:?}: at most {MAX_REWARD} invitations per side"));
            }
            Ok(n)
        };
        let rule = RewardRule { inviter: count(inviter)?, member: count(member)? };
        if rules.insert(kind.clone(), rule).is_some() {
            return Err(format!("kind {:?} has two rules", kind.as_str()));
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_plain_lower_case_names() {
        for good in ["activated", "paid", "first_session", "v2.paid-annual", "a"] {
            assert_eq!(ConversionKind::parse(good).expect(good).as_str(), good);
        }
        let long = "a".repeat(MAX_KIND_LEN + 1);
        for bad in ["", "Paid", "1st", "_x", "has space", "é", long.as_str()] {
            assert!(ConversionKind::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reward_rules_parse_per_kind_and_refuse_nonsense() {
        let rules = parse_reward_rules("activated=1:1, paid = 2:0").expect("rules");
        let kind = |k: &str| ConversionKind::parse(k).expect("kind");
        assert_eq!(rules.get(&kind("activated")), Some(&RewardRule { inviter: 1, member: 1 }));
        assert_eq!(rules.get(&kind("paid")), Some(&RewardRule { inviter: 2, member: 0 }));
        assert!(parse_reward_rules("").expect("empty").is_empty());
        for bad in ["activated", "activated=1", "activated=x:1", "Bad=1:1", "a=1:1,a=2:2", "a=101:0", "a=-1:0"] {
            assert!(parse_reward_rules(bad).is_err(), "{bad:?}");
        }
    }
}
