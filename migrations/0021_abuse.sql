-- Anti-abuse on Redeem and Reserve (docs/design.md, "Abuse controls").
-- IP addresses are never stored: only a keyed hash (HMAC, key derived from
-- the server secret) of the configured prefix (/32 or /24, /64 …), and only
-- for as long as the checks need it.

-- Signals raised by the checks in `flag` mode (or an attempt limit passed),
-- e.g. {IP_REUSE, SAME_IP_AS_INVITER}: on the redemption, and the union over
-- an invitation's redemptions on the invitation (ListForUser shows it).
ALTER TABLE redemptions ADD COLUMN abuse_flags text[] NOT NULL DEFAULT '{}';
ALTER TABLE invitations ADD COLUMN abuse_flags text[] NOT NULL DEFAULT '{}';

-- The hashed IP prefix a redemption came from, kept for the IP window
-- (--abuse-ip-window) and deleted after it.
CREATE TABLE redemption_ips (
    redemption_id bigint PRIMARY KEY REFERENCES redemptions (id),
    invitee_id    text NOT NULL,
    ip_hash       bytea NOT NULL,
    key_id        integer NOT NULL,
    redeem_time   timestamptz NOT NULL DEFAULT now()
);
-- IP reuse: any redemption from this prefix within the window.
CREATE INDEX redemption_ips_ip_hash_idx ON redemption_ips (ip_hash, redeem_time);
-- Same IP as the inviter: the inviter's own redemption.
CREATE INDEX redemption_ips_invitee_idx ON redemption_ips (invitee_id);
-- The sweeper's scan for rows past the window.
CREATE INDEX redemption_ips_redeem_time_idx ON redemption_ips (redeem_time);

-- Failed attempts (unknown or malformed codes) per keyed hash of an IP
-- prefix or an invitee, in fixed windows: shared by every replica. Rows are
-- deleted once their window has passed.
CREATE TABLE attempt_counters (
    key_hash     bytea NOT NULL,
    window_start timestamptz NOT NULL,
    failures     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (key_hash, window_start)
);
CREATE INDEX attempt_counters_window_idx ON attempt_counters (window_start);
