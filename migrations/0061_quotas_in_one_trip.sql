-- The one-statement Redeem also does the quota policies' grants
-- (service::quotas: the welcome grant, the refill and the start of the earn
-- schedule), so Redeem with quotas on is one round trip too
-- (docs/design.md, "One round trip per call"). The service makes the codes
-- (random, sealed, hashed: secrets the database never sees in the clear)
-- and the fixed parts of the minted events before the call, as many as the
-- policies could need; the function inserts the ones the counts call for.

-- One policy grant's prepared invitations: the batch and minted event ids,
-- the event's encoded head (as inv_redeemed_event's), and per invitation
-- its id, code hash and sealed code, and (only with --events-include-codes)
-- the Grant message's encoded code and link fields.
CREATE TYPE inv_grant AS (
    batch_id    uuid,
    event_id    uuid,
    event_time  timestamptz,
    event_head  bytea,
    ids         uuid[],
    hashes      bytea[],
    sealed      bytea[],
    code_fields bytea[],
    link_fields bytea[]
);

-- The quota policies as the service runs them (0: off; earn_secs NULL:
-- the earn policy is off), with the prepared grants and the secret their
-- codes were made under.
CREATE TYPE inv_quotas AS (
    welcome       integer,
    refill_to     integer,
    earn_secs     double precision,
    key_id        integer,
    welcome_grant inv_grant,
    refill_grant  inv_grant
);

-- Mints the first n prepared invitations of g for owner as one batch of
-- single-use invitations without expiry labelled and minted by `policy`
-- (service::mint::mint_batch, through quotas::grant), with its one minted
-- event (events::minted: one grant, invitations in id order). A code that
-- collides with a stored one hands over (IV000): the general path draws
-- again. Returns n.
CREATE FUNCTION inv_mint_grant(g inv_grant, owner text, n integer, policy text, key_id integer) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    inserted bigint;
    grant_body bytea;
BEGIN
    IF n <= 0 THEN
        RETURN 0;
    END IF;
    IF n > coalesce(cardinality(g.ids), 0) THEN
        RAISE EXCEPTION 'inv_mint_grant: % prepared invitations for a grant of %', coalesce(cardinality(g.ids), 0), n;
    END IF;
    INSERT INTO batches (id, label, note, minted_by, invitation_count, expire_time, max_uses)
    VALUES (g.batch_id, policy, '', policy, n, NULL, 1);
    INSERT INTO invitations (id, code_hash, code_ciphertext, inviter_id, batch_id, label, note, minted_by,
                             max_uses, expire_time, binding, binding_digest, code_key_id)
    SELECT t.id, t.code_hash, t.sealed, owner, g.batch_id, policy, '', policy, 1, NULL, NULL, NULL, key_id
    FROM unnest(g.ids[1:n], g.hashes[1:n], g.sealed[1:n]) AS t(id, code_hash, sealed)
    ON CONFLICT (code_hash) DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF inserted < n THEN
        RAISE EXCEPTION 'a granted code collided with a stored one' USING ERRCODE = 'IV000';
    END IF;
    -- Grant: inviter_id (1), invitation_ids (2), codes (3), links (4).
    SELECT inv_pb_bytes('\x0a', convert_to(owner, 'UTF8'))
           || string_agg('\x1224'::bytea || convert_to(u.id::text, 'UTF8'), ''::bytea ORDER BY u.o)
      INTO grant_body
      FROM unnest(g.ids[1:n]) WITH ORDINALITY AS u(id, o);
    IF cardinality(g.code_fields) > 0 THEN
        grant_body := grant_body
            || (SELECT string_agg(c, ''::bytea ORDER BY o) FROM unnest(g.code_fields[1:n]) WITH ORDINALITY AS c(c, o))
            || (SELECT string_agg(l, ''::bytea ORDER BY o) FROM unnest(g.link_fields[1:n]) WITH ORDINALITY AS l(l, o));
    END IF;
    -- Minted: batch_id (1), label (2), minted_by (3), max_uses 1 (4), grants (7).
    INSERT INTO outbox (id, event_type, partition, create_time, payload)
    VALUES (g.event_id, 'minted', inv_partition(owner, g.batch_id), g.event_time,
            g.event_head || inv_pb_bytes('\x52',
                '\x0a24'::bytea || convert_to(g.batch_id::text, 'UTF8')
                || inv_pb_bytes('\x12', convert_to(policy, 'UTF8'))
                || inv_pb_bytes('\x1a', convert_to(policy, 'UTF8'))
                || '\x2001'::bytea
                || inv_pb_bytes('\x3a', grant_body)));
    RETURN n;
END $$;

DROP FUNCTION inv_redeem(bytea[], text, uuid, timestamptz, bytea, bytea, inv_screening, bigint);

-- Redeem of a code (service::redeem, "Redeem" in docs/design.md), in one
-- statement, quota grants included (q: welcome 0 and refill_to 0 grant nothing). `status` is 'REDEEMED' (then `spent` is the invitation after the
-- spend, `redeem_time` and `flags` are set), a refusal reason, or 'GENERAL':
-- the service's general path must answer (nothing was written).
-- `event_*`: the redeemed event's id and time, and (encoded by the service)
-- its head and invitee field (inv_redeemed_event). `time_left_micros`: how
-- long the caller still waits, from the statement's arrival (NULL: no
-- deadline); a call whose caller gave up while it waited for a lock must not
-- commit (with a transaction of its own the service would roll it back), so
-- the statement fails with query_canceled instead.
CREATE FUNCTION inv_redeem(code_hashes bytea[], invitee text, event_id uuid, event_time timestamptz,
                           event_head bytea, event_invitee bytea, s inv_screening, q inv_quotas,
                           time_left_micros bigint, OUT status text, OUT spent invitations, OUT redeem_time timestamptz,
                           OUT flags text[], OUT granted integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lookup record;
    inv invitations;
    m members;
    p members;
    known boolean;
    through uuid;
    mover_root bigint;
    parent_root bigint;
    screened record;
    member_id bigint;
    moved bigint := 1;
    redemption_id bigint;
    joined_now boolean;
    unspent bigint;
    tree_tag constant bigint := x'7472656500000000'::bigint;
    grant_tag constant bigint := x'67726e7400000000'::bigint;
BEGIN
    flags := '{}';
    granted := 0;
    -- The failed-attempt limit, before anything else (grpc `limited`).
    IF cardinality(s.attempt_keys) > 0 AND s.attempt_mode <> 'off'
       AND (SELECT coalesce(max(failures), 0) FROM attempt_counters
            WHERE key_hash = ANY(s.attempt_keys) AND window_start = s.attempt_window) >= s.attempt_limit THEN
        IF s.attempt_mode = 'block' THEN
            status := 'TOO_MANY_ATTEMPTS';
            RETURN;
        END IF;
        flags := ARRAY['ATTEMPT_LIMIT'];
    END IF;
    lookup := inv_find_code(code_hashes, s);
    IF lookup.status IS NOT NULL THEN
        status := lookup.status;
        RETURN;
    END IF;
    inv := lookup.inv;
    IF inv.inviter_id = invitee THEN
        status := 'SELF_INVITE';
        RETURN;
    END IF;
    SELECT true INTO known FROM members WHERE user_id = invitee;
    known := coalesce(known, false);
    -- Only a member can have joined.
    IF known THEN
        SELECT invitation_id INTO through FROM redemptions WHERE invitee_id = invitee;
        IF FOUND THEN
            -- The same invitation: a retry, answered by the general path.
            status := CASE WHEN through = inv.id THEN 'GENERAL' ELSE 'ALREADY_INVITED' END;
            RETURN;
        END IF;
    END IF;
    -- Tree locks (service::locking::lock_move): a known invitee's tree
    -- exclusively and the inviter's shared, in key order; a new invitee has
    -- no tree anyone else can see, so only the inviter's is taken. Roots are
    -- read first without a lock and checked again under the row locks.
    LOOP
        mover_root := NULL;
        parent_root := NULL;
        IF known AND inv.inviter_id IS NOT NULL THEN
            SELECT path[1] INTO mover_root FROM members WHERE user_id = invitee;
        END IF;
        IF inv.inviter_id IS NOT NULL THEN
            SELECT path[1] INTO parent_root FROM members WHERE user_id = inv.inviter_id;
            IF parent_root IS NULL THEN
                status := 'GENERAL';
                RETURN;
            END IF;
        END IF;
        IF mover_root IS NOT NULL AND mover_root = parent_root THEN
            PERFORM pg_advisory_xact_lock(mover_root # tree_tag);
        ELSIF mover_root IS NOT NULL AND parent_root IS NOT NULL AND (mover_root # tree_tag) > (parent_root # tree_tag) THEN
            PERFORM pg_advisory_xact_lock_shared(parent_root # tree_tag);
            PERFORM pg_advisory_xact_lock(mover_root # tree_tag);
        ELSE
            IF mover_root IS NOT NULL THEN
                PERFORM pg_advisory_xact_lock(mover_root # tree_tag);
            END IF;
            IF parent_root IS NOT NULL THEN
                PERFORM pg_advisory_xact_lock_shared(parent_root # tree_tag);
            END IF;
        END IF;
        IF known THEN
            SELECT * INTO m FROM members WHERE user_id = invitee FOR UPDATE;
        END IF;
        IF inv.inviter_id IS NOT NULL THEN
            SELECT * INTO p FROM members WHERE user_id = inv.inviter_id FOR SHARE;
        END IF;
        EXIT WHEN (mover_root IS NULL OR m.path[1] = mover_root)
              AND (inv.inviter_id IS NULL OR p.path[1] = parent_root);
    END LOOP;
    IF known THEN
        SELECT invitation_id INTO through FROM redemptions WHERE invitee_id = invitee;
        IF FOUND THEN
            status := CASE WHEN through = inv.id THEN 'GENERAL' ELSE 'ALREADY_INVITED' END;
            RETURN;
        END IF;
        IF m.inviter_id IS NOT NULL THEN
            status := 'ALREADY_INVITED';
            RETURN;
        END IF;
    END IF;
    status := inv_unavailable(inv);
    IF status IS NOT NULL THEN
        RETURN;
    END IF;
    IF inv.binding IS NOT NULL THEN
        status := 'GENERAL';
        RETURN;
    END IF;
    IF s.disposable IS NOT NULL OR cardinality(s.ip_hashes) > 0 THEN
        screened := inv_screen(s, inv.inviter_id);
        IF screened.refusal IS NOT NULL THEN
            status := screened.refusal;
            RETURN;
        END IF;
        -- Screening flags first, the attempt limit last (as service::redeem).
        flags := screened.flags || flags;
    END IF;
    -- A known invitee placed anywhere but at a root is the general path's.
    IF known AND cardinality(m.path) <> 1 THEN
        status := 'GENERAL';
        RETURN;
    END IF;
    IF inv.inviter_id IS NOT NULL THEN
        IF NOT p.invite_enabled THEN
            status := 'INVITER_DISABLED';
            RETURN;
        END IF;
        IF known AND m.id = ANY(p.path) THEN
            status := 'INVITE_CYCLE';
            RETURN;
        END IF;
    END IF;
    -- Spend the use: the row lock first (after the tree locks, as on the
    -- general path), so the conditional update's snapshot (and clock) come
    -- after every earlier lock holder committed.
    PERFORM 1 FROM invitations WHERE id = inv.id FOR NO KEY UPDATE;
    UPDATE invitations SET uses = uses + 1, last_redeem_time = now(), last_invitee_id = invitee
    WHERE id = inv.id AND revoke_time IS NULL
      AND (expire_time IS NULL OR expire_time > clock_timestamp())
      AND uses + (SELECT count(*) FROM reservations r WHERE r.invitation_id = inv.id AND r.status = 'held'
                  AND r.expire_time > clock_timestamp()) < max_uses
    RETURNING * INTO spent;
    IF NOT FOUND THEN
        status := inv_refusal(inv.id);
        spent := NULL;
        RETURN;
    END IF;
    -- From here on, everything is written or nothing (IV000 hands over).
    redeem_time := now();
    joined_now := NOT known OR m.join_time IS NULL;
    IF known THEN
        UPDATE members SET inviter_id = spent.inviter_id, invitation_id = spent.id,
                           join_time = coalesce(join_time, redeem_time),
                           earn_next_time = CASE WHEN joined_now AND q.earn_secs IS NOT NULL
                                                 THEN redeem_time + make_interval(secs => q.earn_secs)
                                                 ELSE earn_next_time END
        WHERE id = m.id;
        member_id := m.id;
        IF inv.inviter_id IS NOT NULL THEN
            -- tree::graft: the invitee (a root) and its subtree move under p.
            UPDATE members SET path = p.path || path
            WHERE path >= m.path AND path < ARRAY[m.path[1] + 1];
            GET DIAGNOSTICS moved = ROW_COUNT;
        END IF;
    ELSE
        member_id := nextval('members_id_seq');
        INSERT INTO members (id, path, user_id, inviter_id, invitation_id, join_time, earn_next_time)
        VALUES (member_id, coalesce(p.path, '{}') || member_id, invitee, spent.inviter_id, spent.id, redeem_time,
                redeem_time + make_interval(secs => q.earn_secs))
        ON CONFLICT (user_id) DO NOTHING;
        IF NOT FOUND THEN
            -- The same invitee joined concurrently: the general path answers.
            RAISE EXCEPTION 'invitee registered concurrently' USING ERRCODE = 'IV000';
        END IF;
    END IF;
    INSERT INTO redemptions (invitation_id, inviter_id, invitee_id, batch_id, abuse_flags)
    VALUES (spent.id, spent.inviter_id, invitee, spent.batch_id,
            ARRAY(SELECT DISTINCT f FROM unnest(flags) f ORDER BY 1))
    RETURNING id INTO redemption_id;
    INSERT INTO batch_count_deltas (batch_id, used, spent, revoked, uses)
    VALUES (spent.batch_id, (spent.uses = 1)::int, (spent.uses >= spent.max_uses)::int, 0, 1);
    IF inv.inviter_id IS NOT NULL THEN
        INSERT INTO member_count_deltas (member_id, descendants, invitees)
        SELECT a.id, moved, (a.ord = cardinality(p.path))::int
        FROM unnest(p.path) WITH ORDINALITY AS a(id, ord);
    END IF;
    -- Quotas (service::quotas, on_join and refill): the invitee's welcome
    -- grant when it joins now with its privileges on, then the inviter's
    -- refill, serialized per inviter by the grant lock.
    IF joined_now AND q.welcome > 0 AND (NOT known OR m.invite_enabled) THEN
        granted := granted + inv_mint_grant(q.welcome_grant, invitee, q.welcome, 'policy:welcome', q.key_id);
    END IF;
    IF inv.inviter_id IS NOT NULL AND q.refill_to > 0 THEN
        PERFORM pg_advisory_xact_lock(p.id # grant_tag);
        SELECT count(*) INTO unspent FROM invitations i
        WHERE i.inviter_id = p.user_id
          AND i.revoke_time IS NULL AND i.uses < i.max_uses AND (i.expire_time IS NULL OR i.expire_time > now());
        IF unspent < q.refill_to THEN
            granted := granted + inv_mint_grant(q.refill_grant, p.user_id, (q.refill_to - unspent)::int,
                                                'policy:refill', q.key_id);
        END IF;
    END IF;
    IF s.ip_record IS NOT NULL THEN
        INSERT INTO redemption_ips (redemption_id, invitee_id, ip_hash, key_id)
        VALUES (redemption_id, invitee, s.ip_record, s.ip_key_id);
    END IF;
    IF cardinality(flags) > 0 THEN
        UPDATE invitations i SET abuse_flags = ARRAY(SELECT DISTINCT unnest(i.abuse_flags || flags) ORDER BY 1)
        WHERE i.id = spent.id;
    END IF;
    INSERT INTO outbox (id, event_type, partition, create_time, payload)
    VALUES (event_id, 'redeemed', inv_partition(spent.inviter_id, spent.batch_id), event_time,
            inv_redeemed_event(event_head, event_invitee, spent));
    IF clock_timestamp() > statement_timestamp() + time_left_micros * interval '1 microsecond' THEN
        RAISE EXCEPTION 'the call''s deadline passed' USING ERRCODE = 'query_canceled';
    END IF;
    status := 'REDEEMED';
END $$;

