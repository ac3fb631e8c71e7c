-- Stats (docs/design.md, "Stats"): per-batch counters kept without hot rows,
-- and the indexes GetStats reads, so no call scans the invitations table.

-- A batch is minted at one instant with one expiry and one max_uses for all
-- its invitations: its state counts follow from a few counters per batch.
ALTER TABLE batches
    ADD COLUMN expire_time timestamptz,
    ADD COLUMN max_uses    integer NOT NULL DEFAULT 1;
UPDATE batches b SET expire_time = i.expire_time, max_uses = i.max_uses
FROM (SELECT DISTINCT ON (batch_id) batch_id, expire_time, max_uses FROM invitations ORDER BY batch_id) i
WHERE i.batch_id = b.id;

-- GetStats' cohort: batches minted in the window, all or of one label.
CREATE INDEX batches_create_time_idx ON batches (create_time);
CREATE INDEX batches_label_create_time_idx ON batches (label, create_time);

-- What happened to a batch's invitations since minting. Like the graph's
-- member_counts: redeems and revokes never update a counter (every redeem
-- of a million-invitation wave would queue on its row); they append deltas,
-- and the background fold (--graph-fold-interval) moves deltas into
-- batch_counts. A count is batch_counts + the pending deltas.
CREATE TABLE batch_counts (
    batch_id uuid PRIMARY KEY,
    -- Invitations with at least one use.
    used     bigint NOT NULL,
    -- Invitations with every use spent (state REDEEMED).
    spent    bigint NOT NULL,
    -- Invitations revoked with uses left (state REVOKED).
    revoked  bigint NOT NULL,
    -- Uses spent: redemptions.
    uses     bigint NOT NULL
);
CREATE TABLE batch_count_deltas (
    batch_id uuid NOT NULL,
    used     bigint NOT NULL,
    spent    bigint NOT NULL,
    revoked  bigint NOT NULL,
    uses     bigint NOT NULL
);
CREATE INDEX batch_count_deltas_batch_id_idx ON batch_count_deltas (batch_id);

INSERT INTO batch_counts (batch_id, used, spent, revoked, uses)
SELECT batch_id, count(*) FILTER (WHERE uses > 0), count(*) FILTER (WHERE uses = max_uses),
       count(*) FILTER (WHERE revoke_time IS NOT NULL AND uses < max_uses), coalesce(sum(uses), 0)
FROM invitations GROUP BY batch_id;

-- Each redemption names its invitation's batch: time-to-redeem of a cohort
-- is one range of this index (redeem_time - the batch's create_time).
ALTER TABLE redemptions ADD COLUMN batch_id uuid;
UPDATE redemptions r SET batch_id = i.batch_id FROM invitations i WHERE i.id = r.invitation_id;
ALTER TABLE redemptions ALTER COLUMN batch_id SET NOT NULL;
CREATE INDEX redemptions_batch_id_idx ON redemptions (batch_id, redeem_time);

-- Leaderboard of inviters by redemptions in a window (index-only range).
CREATE INDEX redemptions_redeem_time_idx ON redemptions (redeem_time) INCLUDE (inviter_id, batch_id);
-- Abuse flags raised in a window: only flagged redemptions are in it.
CREATE INDEX redemptions_flagged_idx ON redemptions (redeem_time) INCLUDE (abuse_flags, batch_id)
    WHERE abuse_flags <> '{}';
-- New members per day.
CREATE INDEX members_joined_idx ON members (join_time) INCLUDE (invitation_id) WHERE join_time IS NOT NULL;
-- Reservation outcomes of leases taken in a window.
CREATE INDEX reservations_create_time_idx ON reservations (create_time) INCLUDE (status, expire_time, invitation_id);
