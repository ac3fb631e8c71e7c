-- inv_redeem with fewer statements on its common path (issue 14). Every SQL
-- statement a PL/pgSQL function runs pays an executor start and end, plan
-- cache checks and its own constraint set-up; a profile of Redeem (perf of a
-- backend under pgbench of scripts/bench.d/redeem.sql) put about a fifth of
-- the database's time per call there, with 15 statements on the path of a
-- new invitee. Here the same decisions take 6:
--   1. one probe reads, in one snapshot, what the checks before the locks
--      read one statement each: the attempt counter, the invitation by its
--      code hash, the invitee's member row and redemption, the inviter's
--      tree root (the unlocked reads of the loop's first round);
--   2-3. the inviter's tree lock (shared) and its row (FOR SHARE), as before;
--   4-5. the invitation's row lock, then the conditional spend, as before;
--   6. one statement of data-modifying CTEs writes the new member, the edge,
--      both count deltas and (without quota policies, whose minted events
--      come first in the outbox) the redeemed event.
-- Rare branches (a known invitee, a tree that moved while locking, quota
-- grants, screening, flags) keep their own statements. The answers, the
-- locks and their order are unchanged; inv_unavailable and inv_find_code's
-- lookup are written inline (a PL/pgSQL call costs an executor of its own).
CREATE OR REPLACE FUNCTION inv_redeem(code_hashes bytea[], invitee text, event_id uuid, event_time timestamptz,
                           event_head bytea, event_invitee bytea, s inv_screening, q inv_quotas,
                           time_left_micros bigint, OUT status text, OUT spent invitations, OUT redeem_time timestamptz,
                           OUT flags text[], OUT granted integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    probe record;
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
    written bigint;
    joined_now boolean;
    quotas_on boolean := q.welcome > 0 OR q.refill_to > 0;
    unspent bigint;
    first_round boolean := true;
    tree_tag constant bigint := x'7472656500000000'::bigint;
    grant_tag constant bigint := x'67726e7400000000'::bigint;
BEGIN
    flags := '{}';
    granted := 0;
    -- 1. The probe: plain reads, as the checks below made them one by one.
    SELECT coalesce(cardinality(s.attempt_keys) > 0 AND s.attempt_mode <> 'off'
                    AND (SELECT coalesce(max(c.failures), 0) FROM attempt_counters c
                         WHERE c.key_hash = ANY(s.attempt_keys) AND c.window_start = s.attempt_window)
                        >= s.attempt_limit, false) AS over_limit,
           f.inv, me.user_id IS NOT NULL AS known, me.path[1] AS my_root,
           thr.found IS NOT NULL AS joined, thr.invitation_id AS through, par.path[1] AS parent_root
      INTO probe
      FROM (SELECT) one
      LEFT JOIN LATERAL (SELECT i AS inv FROM invitations i WHERE i.code_hash = ANY(code_hashes) LIMIT 1) f ON true
      LEFT JOIN LATERAL (SELECT x.user_id, x.path FROM members x WHERE x.user_id = invitee) me ON true
      LEFT JOIN LATERAL (SELECT true AS found, r.invitation_id FROM redemptions r WHERE r.invitee_id = invitee) thr
             ON true
      LEFT JOIN LATERAL (SELECT y.path FROM members y WHERE y.user_id = (f.inv).inviter_id) par ON true;
    -- The failed-attempt limit, before anything else (grpc `limited`).
    IF probe.over_limit THEN
        IF s.attempt_mode = 'block' THEN
            status := 'TOO_MANY_ATTEMPTS';
            RETURN;
        END IF;
        flags := ARRAY['ATTEMPT_LIMIT'];
    END IF;
    inv := probe.inv;
    IF inv.id IS NULL THEN
        -- inv_find_code's miss: the failed attempt is counted (it sticks).
        IF s.attempt_mode <> 'off' THEN
            PERFORM inv_count_failure(s.attempt_keys, s.attempt_window);
        END IF;
        status := 'CODE_NOT_FOUND';
        RETURN;
    END IF;
    IF inv.inviter_id = invitee THEN
        status := 'SELF_INVITE';
        RETURN;
    END IF;
    known := probe.known;
    -- Only a member can have joined; the same invitation is a retry,
    -- answered by the general path.
    IF known AND probe.joined THEN
        status := CASE WHEN probe.through = inv.id THEN 'GENERAL' ELSE 'ALREADY_INVITED' END;
        RETURN;
    END IF;
    -- Tree locks (service::locking::lock_move): a known invitee's tree
    -- exclusively and the inviter's shared, in key order; a new invitee has
    -- no tree anyone else can see, so only the inviter's is taken. Roots are
    -- read first without a lock (the probe, then again in a later round)
    -- and checked again under the row locks.
    LOOP
        IF first_round THEN
            mover_root := CASE WHEN known AND inv.inviter_id IS NOT NULL THEN probe.my_root END;
            parent_root := CASE WHEN inv.inviter_id IS NOT NULL THEN probe.parent_root END;
            first_round := false;
        ELSE
            mover_root := NULL;
            parent_root := NULL;
            IF known AND inv.inviter_id IS NOT NULL THEN
                SELECT path[1] INTO mover_root FROM members WHERE user_id = invitee;
            END IF;
            IF inv.inviter_id IS NOT NULL THEN
                SELECT path[1] INTO parent_root FROM members WHERE user_id = inv.inviter_id;
            END IF;
        END IF;
        IF inv.inviter_id IS NOT NULL AND parent_root IS NULL THEN
            status := 'GENERAL';
            RETURN;
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
        SELECT r.invitation_id INTO through FROM redemptions r WHERE r.invitee_id = invitee;
        IF FOUND THEN
            status := CASE WHEN through = inv.id THEN 'GENERAL' ELSE 'ALREADY_INVITED' END;
            RETURN;
        END IF;
        IF m.inviter_id IS NOT NULL THEN
            status := 'ALREADY_INVITED';
            RETURN;
        END IF;
    END IF;
    -- inv_unavailable.
    status := CASE WHEN inv.uses >= inv.max_uses THEN 'ALREADY_REDEEMED'
                   WHEN inv.revoke_time IS NOT NULL THEN 'REVOKED'
                   WHEN inv.expire_time <= clock_timestamp() THEN 'EXPIRED' END;
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
    END IF;
    -- 6. The writes. A new invitee's member row first; when it was taken
    -- meanwhile (the same invitee joined concurrently) nothing else is
    -- written and the general path answers.
    WITH joined AS (
        INSERT INTO members (id, path, user_id, inviter_id, invitation_id, join_time, earn_next_time)
        SELECT member_id, coalesce(p.path, '{}') || member_id, invitee, spent.inviter_id, spent.id, redeem_time,
               redeem_time + make_interval(secs => q.earn_secs)
        WHERE NOT known
        ON CONFLICT (user_id) DO NOTHING
        RETURNING 1),
    go AS (SELECT 1 WHERE known OR EXISTS (SELECT FROM joined)),
    edge AS (
        INSERT INTO redemptions (invitation_id, inviter_id, invitee_id, batch_id, abuse_flags)
        SELECT spent.id, spent.inviter_id, invitee, spent.batch_id, ARRAY(SELECT DISTINCT f FROM unnest(flags) f ORDER BY 1)
        FROM go
        RETURNING id),
    batch_delta AS (
        INSERT INTO batch_count_deltas (batch_id, used, spent, revoked, uses)
        SELECT spent.batch_id, (spent.uses = 1)::int, (spent.uses >= spent.max_uses)::int, 0, 1 FROM go),
    member_deltas AS (
        INSERT INTO member_count_deltas (member_id, descendants, invitees)
        SELECT a.id, moved, (a.ord = cardinality(p.path))::int
        FROM go, unnest(p.path) WITH ORDINALITY AS a(id, ord)
        WHERE inv.inviter_id IS NOT NULL),
    event AS (
        INSERT INTO outbox (id, event_type, partition, create_time, payload)
        SELECT event_id, 'redeemed', inv_partition(spent.inviter_id, spent.batch_id), event_time,
               inv_redeemed_event(event_head, event_invitee, spent)
        FROM go WHERE NOT quotas_on)
    SELECT (SELECT id FROM edge), (SELECT count(*) FROM go) INTO redemption_id, written;
    IF written = 0 THEN
        RAISE EXCEPTION 'invitee registered concurrently' USING ERRCODE = 'IV000';
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
    -- With quota policies on, the redeemed event follows the grants' minted
    -- events in the outbox (as before this migration).
    IF quotas_on THEN
        INSERT INTO outbox (id, event_type, partition, create_time, payload)
        VALUES (event_id, 'redeemed', inv_partition(spent.inviter_id, spent.batch_id), event_time,
                inv_redeemed_event(event_head, event_invitee, spent));
    END IF;
    IF clock_timestamp() > statement_timestamp() + time_left_micros * interval '1 microsecond' THEN
        RAISE EXCEPTION 'the call''s deadline passed' USING ERRCODE = 'query_canceled';
    END IF;
    status := 'REDEEMED';
END $$;
