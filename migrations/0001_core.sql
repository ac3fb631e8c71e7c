-- Core schema: members, batches, invitations, redemptions (the invite graph's
-- edges) and AIP-155 idempotency records.

-- Every user the service knows: inviters (registered when something is minted
-- for them) and invitees (registered when they redeem).
CREATE TABLE members (
    user_id       text PRIMARY KEY,
    -- Set once, when the member redeems an owned invitation.
    inviter_id    text REFERENCES members (user_id),
    invitation_id uuid,
    join_time     timestamptz,
    create_time   timestamptz NOT NULL DEFAULT now()
);

-- One row per Mint call that minted something.
CREATE TABLE batches (
    id               uuid PRIMARY KEY,
    label            text NOT NULL DEFAULT '',
    note             text NOT NULL DEFAULT '',
    minted_by        text NOT NULL DEFAULT '',
    invitation_count integer NOT NULL,
    create_time      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE invitations (
    -- UUIDv7: ordered by creation, which keyset pagination relies on.
    id               uuid PRIMARY KEY,
    -- Canonical code (upper case, no prefix, no separators).
    code             text NOT NULL CONSTRAINT invitations_code_key UNIQUE,
    inviter_id       text REFERENCES members (user_id),
    batch_id         uuid NOT NULL REFERENCES batches (id),
    label            text NOT NULL DEFAULT '',
    note             text NOT NULL DEFAULT '',
    minted_by        text NOT NULL DEFAULT '',
    max_uses         integer NOT NULL DEFAULT 1 CHECK (max_uses >= 1),
    uses             integer NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
    create_time      timestamptz NOT NULL DEFAULT now(),
    expire_time      timestamptz,
    last_redeem_time timestamptz,
    last_invitee_id  text,
    revoke_time      timestamptz,
    revoke_reason    text,
    revoked_by       text
);

-- ListForUser: a user's invitations newest first, keyset on id.
CREATE INDEX invitations_inviter_id_idx ON invitations (inviter_id, id DESC);

-- The invite graph's edges, kept forever (also after a revoke).
CREATE TABLE redemptions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invitation_id uuid NOT NULL REFERENCES invitations (id),
    inviter_id    text REFERENCES members (user_id),
    invitee_id    text NOT NULL REFERENCES members (user_id),
    redeem_time   timestamptz NOT NULL DEFAULT now(),
    -- A user comes in through at most one invitation.
    CONSTRAINT redemptions_invitee_id_key UNIQUE (invitee_id)
);

-- Direct invitees of a user, oldest first.
CREATE INDEX redemptions_inviter_id_idx ON redemptions (inviter_id, id);
CREATE INDEX redemptions_invitation_id_idx ON redemptions (invitation_id);

-- AIP-155: the first answer to a request_id, replayed on retries.
CREATE TABLE idempotency_keys (
    method       text NOT NULL,
    request_id   text NOT NULL,
    -- SHA-256 of the request, to refuse the same id with another request.
    request_hash bytea NOT NULL,
    response     bytea NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (method, request_id)
);
CREATE INDEX idempotency_keys_create_time_idx ON idempotency_keys (create_time);
