-- Transactional outbox for notifications (docs/design.md, "Events"): every
-- state change writes its events here in its own transaction; the relay
-- publishes them to NATS JetStream and marks them sent.

CREATE TABLE outbox (
    -- Allocated when the row is written. Events of one invitation are always
    -- written under that invitation's row lock (or by the transaction that
    -- creates it), so their seq order is their commit order.
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The event id (UUIDv7): CloudEvents `ce-id` and JetStream `Nats-Msg-Id`.
    id          uuid NOT NULL,
    -- Type without the `invitations.v1.` prefix: 'minted', 'reservation.lapsed', ...
    event_type  text NOT NULL,
    -- hash(owner) mod 32, where the owner is the inviter, or the batch of an
    -- unowned invitation. One relay at a time publishes a partition, in seq
    -- order, so events of one invitation leave in commit order.
    partition   smallint NOT NULL CHECK (partition >= 0 AND partition < 32),
    -- The encoded invitations.v1.InvitationEvent.
    payload     bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    -- NULL while pending.
    sent_time   timestamptz
);

-- The relay's scan: pending events of a partition in order (small: only
-- pending rows are in it).
CREATE INDEX outbox_pending_idx ON outbox (partition, seq) WHERE sent_time IS NULL;
-- Pruning of sent rows after the retention period.
CREATE INDEX outbox_sent_time_idx ON outbox (sent_time) WHERE sent_time IS NOT NULL;

-- One row per partition: a relay holds a partition by locking its row
-- (FOR UPDATE SKIP LOCKED) for one claim-publish-mark round.
CREATE TABLE outbox_partitions (
    partition smallint PRIMARY KEY CHECK (partition >= 0 AND partition < 32)
);
INSERT INTO outbox_partitions SELECT generate_series(0, 31);

-- The expiry sweeper marks each invitation once, after its expire_time, and
-- emits `expired` in the same transaction (for those that expired with uses
-- left and unrevoked). Invitations already past expiry now are marked as
-- swept, so upgrading does not announce old expiries.
ALTER TABLE invitations ADD COLUMN expire_swept_time timestamptz;
UPDATE invitations SET expire_swept_time = now() WHERE expire_time <= now();
-- The sweeper's scan: invitations with an expiry not swept yet.
CREATE INDEX invitations_expiry_sweep_idx ON invitations (expire_time)
    WHERE expire_time IS NOT NULL AND expire_swept_time IS NULL;
