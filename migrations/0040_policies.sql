-- Waves (Mint by selector) and quota policies (docs/design.md, "Waves" and
-- "Quotas"): the indexes the selectors and policies read, and the earn
-- policy's schedule.

-- A member's open invitations (not revoked, uses left): the
-- no-unspent-invitation selector, refill and the earn cap count them. Expiry
-- is tested on the few rows found (now() cannot sit in an index predicate).
CREATE INDEX invitations_open_inviter_idx ON invitations (inviter_id, expire_time)
    WHERE revoke_time IS NULL AND uses < max_uses;

-- The last-redeemed selector: a member's latest redemption as its inviter.
CREATE INDEX redemptions_inviter_time_idx ON redemptions (inviter_id, redeem_time);

-- The never-issued selector: members with invite privileges by join time.
CREATE INDEX members_join_time_idx ON members (join_time) WHERE invite_enabled;

-- The earn policy: when the member's next invitation is due (NULL: not
-- scheduled; the granter schedules members who joined while the policy was
-- off). Only due members are read, through the partial index.
ALTER TABLE members ADD COLUMN earn_next_time timestamptz;
CREATE INDEX members_earn_next_time_idx ON members (earn_next_time) WHERE earn_next_time IS NOT NULL;

-- The earn policy's schedule for members who joined while it was off is
-- filled by the granter, a batch at a time, through this index.
CREATE INDEX members_earn_unscheduled_idx ON members (id)
    WHERE earn_next_time IS NULL AND join_time IS NOT NULL;
