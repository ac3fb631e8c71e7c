-- One round trip per call (docs/design.md, "One round trip per call";
-- docs/performance.md): the common path of Redeem and Reserve is one call
-- of a function below, sent as one autocommit statement. Each function does
-- what the service's general path does, in the same order and under the
-- same locks, and hands back to it (status 'GENERAL', or SQLSTATE IV000
-- once it has written something) the branches it does not handle: a bound
-- invitation, a retry of a finished redeem, an invitee that already has a
-- subtree, a concurrent insert of the same invitee. Refusals come back as a
-- status named like the API's ErrorInfo reason; none of them writes
-- anything except the failed-attempt counter, which must stick.
--
-- Tested like code: tests/api/round_trips.rs (one round trip per call, the
-- rare branches) and tests/api/sql_events.rs (the protobuf these functions
-- write decodes to what the Rust encoder writes, byte for byte).

-- Protobuf wire format, the few pieces events need (proto3: fields at their
-- default value are left out, as prost does). The service encodes what it
-- knows before the call (the event's id and time, the invitee, the
-- reservation's ref) and passes the bytes; these add the fields only the
-- database knows. PL/pgSQL, not SQL: a SQL function that is not inlined
-- costs an executor start per call, which made an event cost 0.2 ms.
CREATE FUNCTION inv_pb_varint(v bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    out bytea := '';
BEGIN
    IF v >= 0 AND v < 128 THEN
        RETURN substring(int4send(v::int) FROM 4);
    END IF;
    IF v < 0 THEN
        RAISE EXCEPTION 'inv_pb_varint: negative value %', v;
    END IF;
    LOOP
        IF v < 128 THEN
            RETURN out || substring(int4send(v::int) FROM 4);
        END IF;
        out := out || substring(int4send(((v & 127) | 128)::int) FROM 4);
        v := v >> 7;
    END LOOP;
END $$;

-- A length-delimited field: its tag byte(s), the length, the bytes.
CREATE FUNCTION inv_pb_bytes(tag bytea, value bytea) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN tag || inv_pb_varint(octet_length(value)) || value;
END $$;

-- A google.protobuf.Timestamp message's bytes.
CREATE FUNCTION inv_pb_time(t timestamptz) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    micros bigint := (extract(epoch FROM t) * 1000000)::bigint;
    out bytea := '';
BEGIN
    IF micros / 1000000 <> 0 THEN
        out := '\x08'::bytea || inv_pb_varint(micros / 1000000);
    END IF;
    IF micros % 1000000 <> 0 THEN
        out := out || '\x10'::bytea || inv_pb_varint(micros % 1000000 * 1000);
    END IF;
    RETURN out;
END $$;

-- The outbox partition of an invitation's owner, as events::partition_of
-- computes it: the first four bytes of SHA-256("inviter:" id | "batch:"
-- uuid bytes) as a big-endian u32, mod 32, which is the fourth byte mod 32.
CREATE FUNCTION inv_partition(inviter_id text, batch_id uuid) RETURNS smallint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN (get_byte(sha256(CASE WHEN inviter_id IS NOT NULL THEN convert_to('inviter:' || inviter_id, 'UTF8')
                                 ELSE convert_to('batch:', 'UTF8') || uuid_send(batch_id) END), 3) % 32)::smallint;
END $$;

-- The `redeemed` event of Event::redeemed: `head` is the encoded
-- InvitationEvent's id and time, `invitee` the Redeemed message's
-- invitee_id field (both from the service); via_reservation is false.
CREATE FUNCTION inv_redeemed_event(head bytea, invitee bytea, inv invitations) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    body bytea := '\x0a24'::bytea || convert_to(inv.id::text, 'UTF8');
BEGIN
    IF coalesce(inv.inviter_id, '') <> '' THEN
        body := body || inv_pb_bytes('\x12', convert_to(inv.inviter_id, 'UTF8'));
    END IF;
    body := body || invitee || '\x2224'::bytea || convert_to(inv.batch_id::text, 'UTF8');
    IF inv.uses > 0 THEN
        body := body || '\x28'::bytea || inv_pb_varint(inv.uses);
    END IF;
    IF inv.max_uses > 0 THEN
        body := body || '\x30'::bytea || inv_pb_varint(inv.max_uses);
    END IF;
    RETURN head || inv_pb_bytes('\x5a', body);
END $$;

-- The `reservation.reserved` event of Event::reservation: `head` as above,
-- `ref` the ReservationChanged message's reservation_ref field (from the
-- service, which made the reservation's id).
CREATE FUNCTION inv_reserved_event(head bytea, ref bytea, r reservations, inviter_id text) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    -- state HELD (1), then the invitation id.
    body bytea := '\x0801'::bytea || '\x1224'::bytea || convert_to(r.invitation_id::text, 'UTF8');
BEGIN
    IF coalesce(inviter_id, '') <> '' THEN
        body := body || inv_pb_bytes('\x1a', convert_to(inviter_id, 'UTF8'));
    END IF;
    body := body || ref || inv_pb_bytes('\x2a', inv_pb_time(r.expire_time));
    RETURN head || inv_pb_bytes('\x72', body);
END $$;

-- Why an invitation cannot be redeemed right now (Invitation::unavailable_reason),
-- or NULL.
CREATE FUNCTION inv_unavailable(inv invitations) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN CASE WHEN inv.uses >= inv.max_uses THEN 'ALREADY_REDEEMED'
                WHEN inv.revoke_time IS NOT NULL THEN 'REVOKED'
                WHEN inv.expire_time <= clock_timestamp() THEN 'EXPIRED' END;
END $$;

-- Live reservations of an invitation (store::reservations::LIVE_COUNT).
CREATE FUNCTION inv_live_reservations(invitation_id uuid) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT count(*) FROM reservations r
    WHERE r.invitation_id = inv_live_reservations.invitation_id AND r.status = 'held'
      AND r.expire_time > clock_timestamp()
$$;
-- (The conditional updates below spell it out: a SQL function called inside
-- a PL/pgSQL statement is not inlined, and costs an executor start.)

-- Why no use is free after the conditional update found none
-- (service::reservation::refusal), read in a fresh snapshot.
CREATE FUNCTION inv_refusal(invitation_id uuid) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lookup record;
    inv invitations;
    enabled boolean;
BEGIN
    SELECT * INTO inv FROM invitations WHERE id = invitation_id;
    IF NOT FOUND THEN
        RETURN 'CODE_NOT_FOUND';
    END IF;
    IF inv_unavailable(inv) IS NOT NULL THEN
        RETURN inv_unavailable(inv);
    END IF;
    SELECT invite_enabled INTO enabled FROM members WHERE user_id = inv.inviter_id;
    IF NOT coalesce(enabled, true) THEN
        RETURN 'INVITER_DISABLED';
    END IF;
    IF inv.uses + inv_live_reservations(inv.id) >= inv.max_uses THEN
        RETURN 'RESERVED';
    END IF;
    RETURN 'ALREADY_REDEEMED';
END $$;

-- Counts one failure per key (store::abuse::add_failure).
CREATE FUNCTION inv_count_failure(keys bytea[], window_start timestamptz) RETURNS void
LANGUAGE sql VOLATILE AS $$
    INSERT INTO attempt_counters (key_hash, window_start, failures)
    SELECT k, window_start, 1 FROM unnest(keys) k
    ON CONFLICT (key_hash, window_start) DO UPDATE SET failures = attempt_counters.failures + 1
$$;

-- How Redeem and Reserve are screened: the parts of AbuseSettings the
-- database needs, with the request's hashes. Modes are 'block', 'flag' or
-- 'off'.
CREATE TYPE inv_screening AS (
    -- Keys of the failed-attempt counters (empty: the limit is off).
    attempt_keys     bytea[],
    attempt_window   timestamptz,
    attempt_limit    integer,
    attempt_mode     text,
    -- 'block' or 'flag' when the e-mail's domain is disposable and that
    -- check is on; NULL otherwise (the list lives in the service).
    disposable       text,
    -- The client's IP prefix, one hash per configured secret (empty: no IP,
    -- or both IP checks off), and how far back to look.
    ip_hashes        bytea[],
    ip_since         timestamptz,
    ip_reuse         text,
    same_ip          text,
    -- The hash to record on the redemption, under ip_key_id (NULL: none).
    ip_record        bytea,
    ip_key_id        integer
);

-- What a screened request found: a refusal, or the flags to record.
CREATE FUNCTION inv_screen(s inv_screening, inviter_id text, OUT refusal text, OUT flags text[])
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    reused boolean := false;
    same boolean := false;
BEGIN
    flags := '{}';
    IF s.disposable = 'block' THEN
        refusal := 'DISPOSABLE_EMAIL';
        RETURN;
    ELSIF s.disposable = 'flag' THEN
        flags := flags || 'DISPOSABLE_EMAIL'::text;
    END IF;
    IF cardinality(s.ip_hashes) > 0 AND (s.ip_reuse <> 'off' OR (s.same_ip <> 'off' AND inviter_id IS NOT NULL)) THEN
        SELECT EXISTS (SELECT 1 FROM redemption_ips WHERE ip_hash = ANY(s.ip_hashes) AND redeem_time > s.ip_since),
               EXISTS (SELECT 1 FROM redemption_ips WHERE redemption_ips.invitee_id = inv_screen.inviter_id
                       AND ip_hash = ANY(s.ip_hashes) AND redeem_time > s.ip_since)
          INTO reused, same;
        IF same AND s.same_ip = 'block' THEN
            refusal := 'SAME_IP_AS_INVITER';
            RETURN;
        ELSIF same AND s.same_ip = 'flag' THEN
            flags := flags || 'SAME_IP_AS_INVITER'::text;
        END IF;
        IF reused AND s.ip_reuse = 'block' THEN
            refusal := 'IP_ALREADY_USED';
            RETURN;
        ELSIF reused AND s.ip_reuse = 'flag' THEN
            flags := flags || 'IP_REUSE'::text;
        END IF;
    END IF;
END $$;

-- The invitation a code names (one probe of the code's keyed hash), or
-- status CODE_NOT_FOUND after counting the failed attempt (it sticks: the
-- statement returns normally). Shared by inv_redeem and inv_reserve.
CREATE FUNCTION inv_find_code(code_hashes bytea[], s inv_screening, OUT status text, OUT inv invitations)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    SELECT * INTO inv FROM invitations WHERE code_hash = ANY(code_hashes) LIMIT 1;
    IF NOT FOUND THEN
        IF s.attempt_mode <> 'off' THEN
            PERFORM inv_count_failure(s.attempt_keys, s.attempt_window);
        END IF;
        status := 'CODE_NOT_FOUND';
        inv := NULL;
    END IF;
END $$;

-- Redeem of a code (service::redeem, "Redeem" in docs/design.md), in one
-- statement. `status` is 'REDEEMED' (then `spent` is the invitation after the
-- spend, `redeem_time` and `flags` are set), a refusal reason, or 'GENERAL':
-- the service's general path must answer (nothing was written).
-- `event_*`: the redeemed event's id and time, and (encoded by the service)
-- its head and invitee field (inv_redeemed_event). `time_left_micros`: how
-- long the caller still waits, from the statement's arrival (NULL: no
-- deadline); a call whose caller gave up while it waited for a lock must not
-- commit (with a transaction of its own the service would roll it back), so
-- the statement fails with query_canceled instead.
CREATE FUNCTION inv_redeem(code_hashes bytea[], invitee text, event_id uuid, event_time timestamptz,
                           event_head bytea, event_invitee bytea, s inv_screening,
                           time_left_micros bigint, OUT status text, OUT spent invitations, OUT redeem_time timestamptz,
                           OUT flags text[])
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
    tree_tag constant bigint := x'7472656500000000'::bigint;
BEGIN
    flags := '{}';
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
    IF known THEN
        UPDATE members SET inviter_id = spent.inviter_id, invitation_id = spent.id,
                           join_time = coalesce(join_time, redeem_time)
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
        INSERT INTO members (id, path, user_id, inviter_id, invitation_id, join_time)
        VALUES (member_id, coalesce(p.path, '{}') || member_id, invitee, spent.inviter_id, spent.id, redeem_time)
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

-- Reserve (service::reservation::reserve) in one statement. `status` is
-- 'RESERVED_USE' (then `reservation` is the new lease and `inviter_id` its
-- invitation's owner), a refusal reason, or 'GENERAL' (nothing written).
-- `event_*` and `time_left_micros` as for inv_redeem; `event_ref` is the
-- event's reservation_ref field.
CREATE FUNCTION inv_reserve(code_hashes bytea[], reservation_id uuid, ttl_micros bigint, event_id uuid,
                            event_time timestamptz, event_head bytea, event_ref bytea,
                            s inv_screening, time_left_micros bigint, OUT status text, OUT reservation reservations,
                            OUT inviter_id text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lookup record;
    inv invitations;
    enabled boolean;
    screened record;
BEGIN
    IF cardinality(s.attempt_keys) > 0 AND s.attempt_mode = 'block'
       AND (SELECT coalesce(max(failures), 0) FROM attempt_counters
            WHERE key_hash = ANY(s.attempt_keys) AND window_start = s.attempt_window) >= s.attempt_limit THEN
        status := 'TOO_MANY_ATTEMPTS';
        RETURN;
    END IF;
    lookup := inv_find_code(code_hashes, s);
    IF lookup.status IS NOT NULL THEN
        status := lookup.status;
        RETURN;
    END IF;
    inv := lookup.inv;
    status := inv_unavailable(inv);
    IF status IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT invite_enabled INTO enabled FROM members WHERE user_id = inv.inviter_id;
    IF NOT coalesce(enabled, true) THEN
        status := 'INVITER_DISABLED';
        RETURN;
    END IF;
    IF inv.binding IS NOT NULL THEN
        status := 'GENERAL';
        RETURN;
    END IF;
    -- Blocking checks refuse the sign-up at the form already; flags are
    -- recorded when Redeem completes it.
    IF s.disposable IS NOT NULL OR cardinality(s.ip_hashes) > 0 THEN
        screened := inv_screen(s, inv.inviter_id);
        IF screened.refusal IS NOT NULL THEN
            status := screened.refusal;
            RETURN;
        END IF;
    END IF;
    PERFORM 1 FROM invitations WHERE id = inv.id FOR NO KEY UPDATE;
    INSERT INTO reservations (id, invitation_id, expire_time)
    SELECT reservation_id, i.id, least(clock_timestamp() + ttl_micros * interval '1 microsecond', i.expire_time)
    FROM invitations i
    WHERE i.id = inv.id AND i.revoke_time IS NULL
      AND (i.expire_time IS NULL OR i.expire_time > clock_timestamp())
      AND i.uses + (SELECT count(*) FROM reservations r WHERE r.invitation_id = i.id AND r.status = 'held'
                    AND r.expire_time > clock_timestamp()) < i.max_uses
    RETURNING * INTO reservation;
    IF NOT FOUND THEN
        status := inv_refusal(inv.id);
        reservation := NULL;
        RETURN;
    END IF;
    inviter_id := inv.inviter_id;
    INSERT INTO outbox (id, event_type, partition, create_time, payload)
    VALUES (event_id, 'reservation.reserved', inv_partition(inv.inviter_id, inv.batch_id), event_time,
            inv_reserved_event(event_head, event_ref, reservation, inv.inviter_id));
    IF clock_timestamp() > statement_timestamp() + time_left_micros * interval '1 microsecond' THEN
        RAISE EXCEPTION 'the call''s deadline passed' USING ERRCODE = 'query_canceled';
    END IF;
    status := 'RESERVED_USE';
END $$;
