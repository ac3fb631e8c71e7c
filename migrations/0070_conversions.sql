-- Conversions (docs/design.md, "Conversions and rewards"): a member did a
-- qualifying action of an operator-named kind, at most once per kind,
-- attributed to the invitation it joined through; and the rewards of
-- --reward-rule, granted to both sides of the referral through the one
-- mint path (inv_mint_grant) in the same statement.

CREATE TABLE conversions (
    id               uuid PRIMARY KEY,
    user_id          text NOT NULL REFERENCES members (user_id),
    kind             text NOT NULL,
    occur_time       timestamptz NOT NULL,
    record_time      timestamptz NOT NULL DEFAULT now(),
    value            bigint,
    -- Attribution, fixed at record time: the member's redemption (whose
    -- inviter is the invitation's owner; Reparent does not move it). Copies
    -- of rows that are never deleted, so no foreign keys: a key check
    -- share-locks the referenced row, and a wave's batch (or a popular
    -- inviter) would be one row every conversion of its invitees locks.
    invitation_id    uuid,
    inviter_id       text,
    batch_id         uuid,
    label            text,
    redeem_time      timestamptz,
    -- The reward: 'none' (no rule for the kind, nobody to reward, or
    -- nothing left to give), 'pending' (held until hold_until, then granted
    -- by the background granter), 'granted', or 'voided' (VoidConversion:
    -- a pending reward dropped, or a granted one's unspent invitations
    -- revoked), 'review' (the redemption was flagged and --reward-flagged
    -- is `hold`: ReviewRewards decides) or 'denied' (by review, or
    -- --reward-flagged deny).
    reward_state     text NOT NULL DEFAULT 'none'
                     CHECK (reward_state IN ('none', 'pending', 'granted', 'voided', 'review', 'denied')),
    -- The abuse flags of the member's redemption, copied.
    redemption_flags text[] NOT NULL DEFAULT '{}',
    inviter_reward   integer NOT NULL DEFAULT 0 CHECK (inviter_reward >= 0),
    member_reward    integer NOT NULL DEFAULT 0 CHECK (member_reward >= 0),
    inviter_capped   boolean NOT NULL DEFAULT false,
    inviter_batch_id uuid,
    member_batch_id  uuid,
    reward_time      timestamptz,
    hold_until       timestamptz,
    void_time        timestamptz,
    void_reason      text,
    voided_by        text,
    review_time      timestamptz,
    reviewed_by      text,
    review_reason    text,
    CONSTRAINT conversions_user_kind_key UNIQUE (user_id, kind)
);

-- The per-inviter cap: an inviter's rewarded conversions in the period.
CREATE INDEX conversions_inviter_reward_idx ON conversions (inviter_id, record_time)
    WHERE inviter_reward > 0;
-- The granter: pending rewards by the end of their hold.
CREATE INDEX conversions_hold_idx ON conversions (hold_until) WHERE reward_state = 'pending';
-- Stats by batch and ListForUser's "has its invitee converted".
CREATE INDEX conversions_batch_idx ON conversions (batch_id, kind) WHERE batch_id IS NOT NULL;
CREATE INDEX conversions_invitation_idx ON conversions (invitation_id) WHERE invitation_id IS NOT NULL;
CREATE INDEX conversions_record_time_idx ON conversions (record_time);
-- The stats' leaderboard: conversions that happened in a window.
CREATE INDEX conversions_occur_time_idx ON conversions (occur_time) INCLUDE (inviter_id, kind)
    WHERE inviter_id IS NOT NULL;

-- One reward rule as the service runs it: N invitations for the inviter,
-- M for the member, the inviter's cap (0: none) per period, and the hold
-- (0: granted at once).
CREATE TYPE inv_reward_rule AS (
    inviter_count integer,
    member_count  integer,
    cap           integer,
    cap_secs      double precision,
    key_id        integer,
    hold_secs     double precision,
    -- For a redemption the abuse checks flagged: 'grant', 'hold' (for
    -- review) or 'deny'.
    flagged       text
);

-- RecordConversion (service::conversions) in one statement: the member's
-- attribution, the conversion, the reward (rule NULL or 0 and 0: none)
-- through inv_mint_grant from the prepared grants, and the events
-- `converted` and `reward.granted` (their service-known fields encoded by
-- the service: `converted_fixed`, `reward_fixed`; the rest added here).
-- `status`: 'RECORDED', 'EXISTING' (the member already converted with this
-- kind: that conversion, unchanged) or 'NOT_FOUND' (unknown member).
CREATE FUNCTION inv_record_conversion(conversion_id uuid, member text, conversion_kind text, occurred timestamptz,
                                      amount bigint, rule inv_reward_rule, inviter_grant inv_grant,
                                      member_grant inv_grant, event_id uuid, event_time timestamptz,
                                      event_head bytea, converted_fixed bytea, reward_event_id uuid,
                                      reward_head bytea, reward_fixed bytea,
                                      OUT status text, OUT conv conversions)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    m members;
    inviter members;
    r redemptions;
    batch_label text;
    policy text := 'reward:' || conversion_kind;
    to_inviter integer := 0;
    to_member integer := 0;
    capped boolean := false;
    rewarded bigint;
    body bytea;
    reward_tag constant bigint := x'7277726400000000'::bigint;
BEGIN
    SELECT * INTO conv FROM conversions c WHERE c.user_id = member AND c.kind = conversion_kind;
    IF FOUND THEN
        status := 'EXISTING';
        RETURN;
    END IF;
    SELECT * INTO m FROM members WHERE user_id = member;
    IF NOT FOUND THEN
        status := 'NOT_FOUND';
        RETURN;
    END IF;
    SELECT * INTO r FROM redemptions WHERE invitee_id = member;
    IF FOUND THEN
        SELECT label INTO batch_label FROM batches WHERE id = r.batch_id;
    END IF;
    INSERT INTO conversions (id, user_id, kind, occur_time, value, invitation_id, inviter_id, batch_id, label,
                             redeem_time, redemption_flags)
    VALUES (conversion_id, member, conversion_kind, coalesce(occurred, now()), amount, r.invitation_id, r.inviter_id,
            r.batch_id, batch_label, r.redeem_time, coalesce(r.abuse_flags, '{}'))
    ON CONFLICT (user_id, kind) DO NOTHING
    RETURNING * INTO conv;
    IF NOT FOUND THEN
        -- Recorded concurrently (another call, another replica): the insert
        -- waited for it to commit, so this statement's next snapshot sees it.
        SELECT * INTO conv FROM conversions c WHERE c.user_id = member AND c.kind = conversion_kind;
        status := 'EXISTING';
        RETURN;
    END IF;
    -- Rewards go to both sides of a referral: only with an inviter.
    IF r.inviter_id IS NOT NULL AND coalesce(rule.inviter_count, 0) + coalesce(rule.member_count, 0) > 0 THEN
        SELECT * INTO inviter FROM members WHERE user_id = r.inviter_id;
        IF rule.inviter_count > 0 AND inviter.invite_enabled THEN
            IF rule.cap > 0 THEN
                -- The cap: concurrent conversions of one inviter's invitees
                -- queue here, and each counts the rewards committed before
                -- it (a new snapshot per statement), so the cap holds.
                PERFORM pg_advisory_xact_lock(inviter.id # reward_tag);
                SELECT count(*) INTO rewarded FROM conversions c
                WHERE c.inviter_id = r.inviter_id AND c.inviter_reward > 0
                  AND c.reward_state IN ('pending', 'granted', 'review')
                  AND c.record_time > now() - make_interval(secs => rule.cap_secs);
                capped := rewarded >= rule.cap;
            END IF;
            IF NOT capped THEN
                to_inviter := rule.inviter_count;
            END IF;
        END IF;
        IF rule.member_count > 0 AND m.invite_enabled THEN
            to_member := rule.member_count;
        END IF;
        IF cardinality(r.abuse_flags) > 0 AND rule.flagged IN ('hold', 'deny') AND to_inviter + to_member > 0 THEN
            -- A flagged redemption: held for ReviewRewards (the counts
            -- decided now, counting against the cap), or denied.
            UPDATE conversions c
            SET reward_state = CASE WHEN rule.flagged = 'hold' THEN 'review' ELSE 'denied' END,
                inviter_reward = CASE WHEN rule.flagged = 'hold' THEN to_inviter ELSE 0 END,
                member_reward = CASE WHEN rule.flagged = 'hold' THEN to_member ELSE 0 END,
                inviter_capped = capped
            WHERE c.id = conv.id
            RETURNING * INTO conv;
        ELSIF coalesce(rule.hold_secs, 0) > 0 AND to_inviter + to_member > 0 THEN
            -- Held: the counts are decided (and count against the cap) now;
            -- the background granter mints them when the hold ends.
            UPDATE conversions c
            SET reward_state = 'pending', inviter_reward = to_inviter, member_reward = to_member,
                inviter_capped = capped, hold_until = now() + make_interval(secs => rule.hold_secs)
            WHERE c.id = conv.id
            RETURNING * INTO conv;
        ELSE
            PERFORM inv_mint_grant(inviter_grant, r.inviter_id, to_inviter, policy, rule.key_id);
            PERFORM inv_mint_grant(member_grant, member, to_member, policy, rule.key_id);
            UPDATE conversions c
            SET reward_state = CASE WHEN to_inviter + to_member > 0 THEN 'granted' ELSE 'none' END,
                inviter_reward = to_inviter, member_reward = to_member, inviter_capped = capped,
                inviter_batch_id = CASE WHEN to_inviter > 0 THEN inviter_grant.batch_id END,
                member_batch_id = CASE WHEN to_member > 0 THEN member_grant.batch_id END,
                reward_time = CASE WHEN to_inviter + to_member > 0 THEN now() END
            WHERE c.id = conv.id
            RETURNING * INTO conv;
        END IF;
    END IF;
    -- Converted: invitation_id (6), inviter_id (7), batch_id (8), label (9).
    body := converted_fixed;
    IF r.invitation_id IS NOT NULL THEN
        body := body || '\x3224'::bytea || convert_to(r.invitation_id::text, 'UTF8');
        IF r.inviter_id IS NOT NULL THEN
            body := body || inv_pb_bytes('\x3a', convert_to(r.inviter_id, 'UTF8'));
        END IF;
        body := body || '\x4224'::bytea || convert_to(r.batch_id::text, 'UTF8');
        IF coalesce(batch_label, '') <> '' THEN
            body := body || inv_pb_bytes('\x4a', convert_to(batch_label, 'UTF8'));
        END IF;
    END IF;
    INSERT INTO outbox (id, event_type, partition, create_time, payload)
    VALUES (event_id, 'converted', inv_partition(coalesce(r.inviter_id, member), NULL), event_time,
            event_head || inv_pb_bytes('\xa201', body));
    IF conv.reward_state = 'granted' THEN
        -- RewardGranted: inviter_id (4), counts (5, 6), batches (7, 8), capped (9).
        body := reward_fixed || inv_pb_bytes('\x22', convert_to(r.inviter_id, 'UTF8'));
        IF to_inviter > 0 THEN
            body := body || '\x28'::bytea || inv_pb_varint(to_inviter);
        END IF;
        IF to_member > 0 THEN
            body := body || '\x30'::bytea || inv_pb_varint(to_member);
        END IF;
        IF to_inviter > 0 THEN
            body := body || '\x3a24'::bytea || convert_to(inviter_grant.batch_id::text, 'UTF8');
        END IF;
        IF to_member > 0 THEN
            body := body || '\x4224'::bytea || convert_to(member_grant.batch_id::text, 'UTF8');
        END IF;
        IF capped THEN
            body := body || '\x4801'::bytea;
        END IF;
        INSERT INTO outbox (id, event_type, partition, create_time, payload)
        VALUES (reward_event_id, 'reward.granted', inv_partition(r.inviter_id, NULL), event_time,
                reward_head || inv_pb_bytes('\xaa01', body));
    END IF;
    status := 'RECORDED';
END $$;
