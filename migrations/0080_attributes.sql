-- Invitation attributes (issue 18): a small map the invitation carries to
-- the sign-up service, never interpreted here (domain::attributes owns the
-- limits). Stored flat, key, value, key, value, … in key order (byte order,
-- as a prost BTreeMap encodes them), so the redeemed event below is encoded
-- in that order without sorting. Empty for nearly every invitation: the
-- constant default adds the column without rewriting the table.
ALTER TABLE invitations ADD COLUMN attributes text[] NOT NULL DEFAULT '{}';

-- Quota grants carry the operator's --grant-attributes.
ALTER TYPE inv_grant ADD ATTRIBUTE attributes text[];

-- The redeemed event (Event::redeemed) with Redeemed.attributes (field 25,
-- map entries of key (1) and value (2), defaults left out as prost does).
-- Only the `IF cardinality` test is new on the common path of an invitation
-- without attributes.
CREATE OR REPLACE FUNCTION inv_redeemed_event(head bytea, invitee bytea, inv invitations) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    body bytea := '\x0a24'::bytea || convert_to(inv.id::text, 'UTF8');
    entry bytea;
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
    IF cardinality(inv.attributes) > 0 THEN
        FOR i IN 1 .. cardinality(inv.attributes) - 1 BY 2 LOOP
            entry := inv_pb_bytes('\x0a', convert_to(inv.attributes[i], 'UTF8'));
            IF inv.attributes[i + 1] <> '' THEN
                entry := entry || inv_pb_bytes('\x12', convert_to(inv.attributes[i + 1], 'UTF8'));
            END IF;
            body := body || inv_pb_bytes('\xca01', entry);
        END LOOP;
    END IF;
    RETURN head || inv_pb_bytes('\x5a', body);
END $$;

-- inv_mint_grant of 0061 with the grant's attributes stored on its
-- invitations (NULL: none).
CREATE OR REPLACE FUNCTION inv_mint_grant(g inv_grant, owner text, n integer, policy text, key_id integer) RETURNS integer
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
                             max_uses, expire_time, binding, binding_digest, code_key_id, attributes)
    SELECT t.id, t.code_hash, t.sealed, owner, g.batch_id, policy, '', policy, 1, NULL, NULL, NULL, key_id,
           coalesce(g.attributes, '{}')
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
