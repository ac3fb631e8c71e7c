//! Which members a wave of invitations goes to: the domain's words for
//! it, read by the service (Mint) and by the store (the matching SQL).

/// Which members a wave goes to (members with disabled invite privileges
/// never match).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// No unspent invitation right now.
    NoUnspentInvitation,
    /// Never issued any invitation, and joined at least this long ago.
    NeverIssued { joined_at_least: time::Duration },
    /// Their most recent redemption was at least this long ago.
    LastRedeemed { at_least: time::Duration },
}

/// `count` invitations, one each for members drawn at random among those
/// `selector` matches.
#[derive(Debug, Clone, Copy)]
pub struct Wave {
    pub selector: Selector,
    pub count: u32,
}
