//! Growth planning for `invitations admin plan-wave`: pure arithmetic on the
//! measured history (no I/O), so it is unit-tested on its own.
//!
//! The model: a new member is one redemption. From cohorts minted long enough
//! ago that their first `within` after minting is fully observed, the yield
//! is `redemptions within `within` of minting / invitations minted`. A new
//! wave is assumed to yield the same, so reaching `target` new members within
//! `within` takes `ceil(target / yield)` invitations.

use std::fmt;

/// What GetStats measured over the history window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    /// Invitations minted in the history window.
    pub minted: i64,
    /// Their redemptions (uses) that came within `within` of minting.
    pub redeemed_within: i64,
    /// All their redemptions so far.
    pub redemptions: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Expected new members per invitation minted, within `within`.
    pub yield_per_invitation: f64,
    /// Invitations to mint.
    pub invitations: u64,
}

/// Why there is nothing to plan from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRate {
    /// Nothing was minted in the history window.
    NothingMinted,
    /// Invitations were minted but none was redeemed within the window.
    NoneRedeemed { minted: i64 },
}

impl fmt::Display for NoRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoRate::NothingMinted => write!(
                f,
                "no history: no invitations were minted in the history window, so there is no redemption \
                 rate to plan from. Mint a first wave by hand (`invitations admin mint --selector ... --count N`), \
                 wait at least --within, then plan from its results (or widen --history)"
            ),
            NoRate::NoneRedeemed { minted } => write!(
                f,
                "no rate: none of the {minted} invitations minted in the history window was redeemed within \
                 --within of minting, so no number of invitations can be expected to reach the target"
            ),
        }
    }
}

/// How many invitations reach `target` new members at the measured yield.
pub fn plan(target: u64, history: &History) -> Result<Plan, NoRate> {
    if history.minted <= 0 {
        return Err(NoRate::NothingMinted);
    }
    if history.redeemed_within <= 0 {
        return Err(NoRate::NoneRedeemed { minted: history.minted });
    }
    let yield_per_invitation = history.redeemed_within as f64 / history.minted as f64;
    // Integer ceiling of target * minted / redeemed_within: no float rounding
    // turns an exact 120.0 into 121.
    let numerator = u128::from(target) * history.minted as u128;
    let invitations = numerator.div_ceil(history.redeemed_within as u128);
    Ok(Plan { yield_per_invitation, invitations: u64::try_from(invitations).unwrap_or(u64::MAX) })
}

/// A selector that could receive the wave, and how many members it matches
/// now (one invitation each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<S> {
    pub selector: S,
    pub matched: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice<S> {
    pub selector: S,
    /// Invitations to mint with it: the plan's number, or every match when
    /// it matches fewer.
    pub count: u64,
    /// The selector matches fewer members than the plan needs.
    pub short: bool,
}

/// The first candidate (in the caller's order of preference) that matches
/// enough members for `needed` invitations; if none does, the one matching
/// the most, for all its members (`short`). None when there is no candidate.
pub fn choose<S: Clone>(needed: u64, candidates: &[Candidate<S>]) -> Option<Choice<S>> {
    if let Some(c) = candidates.iter().find(|c| c.matched >= needed) {
        return Some(Choice { selector: c.selector.clone(), count: needed, short: false });
    }
    // max_by_key keeps the last of equals; reverse so the earlier (preferred) wins.
    let best = candidates.iter().rev().max_by_key(|c| c.matched)?;
    Some(Choice { selector: best.selector.clone(), count: best.matched, short: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(minted: i64, redeemed_within: i64) -> History {
        History { minted, redeemed_within, redemptions: redeemed_within }
    }

    #[test]
    fn invitations_needed_is_the_target_over_the_yield_rounded_up() {
        let p = plan(30, &history(200, 50)).expect("a rate");
        assert_eq!(p.yield_per_invitation, 0.25);
        assert_eq!(p.invitations, 120, "30 / 0.25 exactly: no extra invitation from rounding");
        assert_eq!(plan(31, &history(200, 50)).expect("a rate").invitations, 124, "31 / 0.25 = 124");
        assert_eq!(plan(1, &history(3, 1)).expect("a rate").invitations, 3);
        assert_eq!(plan(10, &history(7, 3)).expect("a rate").invitations, 24, "10 * 7 / 3 = 23.33 -> 24");
        assert_eq!(plan(0, &history(7, 3)).expect("a rate").invitations, 0);
        // Multi-use invitations can yield more than one member each.
        assert_eq!(plan(100, &history(10, 40)).expect("a rate").invitations, 25);
    }

    #[test]
    fn no_history_and_no_redemptions_are_explained() {
        assert_eq!(plan(10, &history(0, 0)), Err(NoRate::NothingMinted));
        assert_eq!(plan(10, &history(50, 0)), Err(NoRate::NoneRedeemed { minted: 50 }));
        assert!(NoRate::NothingMinted.to_string().starts_with("no history"));
        assert!(NoRate::NoneRedeemed { minted: 50 }.to_string().contains("none of the 50 invitations"));
    }

    #[test]
    fn the_first_selector_with_enough_members_wins() {
        let c = |selector: &'static str, matched| Candidate { selector, matched };
        let all = [c("no-unspent", 80), c("last-redeemed", 500), c("never-issued", 900)];
        assert_eq!(choose(120, &all), Some(Choice { selector: "last-redeemed", count: 120, short: false }));
        assert_eq!(choose(50, &all), Some(Choice { selector: "no-unspent", count: 50, short: false }));
        assert_eq!(choose(1000, &all), Some(Choice { selector: "never-issued", count: 900, short: true }));
        let tie = [c("a", 5), c("b", 5)];
        assert_eq!(choose(9, &tie), Some(Choice { selector: "a", count: 5, short: true }), "ties keep the preferred");
        assert_eq!(choose::<&str>(1, &[]), None);
    }
}
