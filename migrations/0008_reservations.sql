-- Reserve-then-complete redemption, and invitations bound to an e-mail
-- address or domain (docs/design.md, "Reservations" and "Bound invitations").

-- Who may redeem a bound invitation. The address or domain itself is never
-- stored: only binding_digest = salt (16 bytes) || SHA-256(salt || value).
CREATE TYPE invitation_binding AS ENUM ('email', 'domain');

ALTER TABLE invitations
    ADD COLUMN binding        invitation_binding,
    ADD COLUMN binding_digest bytea,
    ADD CONSTRAINT invitations_binding_check CHECK ((binding IS NULL) = (binding_digest IS NULL));

-- 'held' rows past expire_time are lapsed whether or not the sweeper has
-- marked them 'lapsed' yet: correctness never waits for the sweeper.
CREATE TYPE reservation_status AS ENUM ('held', 'completed', 'released', 'lapsed');

-- A lease on one use of an invitation. Kept after it ends, for stats.
CREATE TABLE reservations (
    -- Random (UUIDv4): the id is the bearer's handle on the held use.
    id            uuid PRIMARY KEY,
    invitation_id uuid NOT NULL REFERENCES invitations (id),
    status        reservation_status NOT NULL DEFAULT 'held',
    create_time   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expire_time   timestamptz NOT NULL,
    -- When it was completed, released, or (for 'lapsed') when it ran out.
    end_time      timestamptz,
    -- Who completed it.
    invitee_id    text,
    CONSTRAINT reservations_end_check CHECK ((status = 'held') = (end_time IS NULL))
);

-- Live reservations of an invitation (counted by every reserve and redeem).
CREATE INDEX reservations_held_idx ON reservations (invitation_id, expire_time) WHERE status = 'held';
-- The sweeper's scan for held rows that ran out.
CREATE INDEX reservations_held_expire_idx ON reservations (expire_time) WHERE status = 'held';
