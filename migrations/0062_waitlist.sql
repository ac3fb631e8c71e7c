-- The waitlist (docs/design.md, "Waitlist"): people who want in but know
-- nobody inside. An entry joins the line, moves up for each applicant who
-- joins through its referral handle (and for each of those who redeems),
-- may be reviewed, and is admitted with an invitation bound to its
-- applicant.

CREATE TABLE waitlist_entries (
    id                 uuid PRIMARY KEY,
    -- Join order.
    seq                bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT waitlist_entries_seq_key UNIQUE,
    -- The product's own id of the person (never an address).
    applicant_id       text NOT NULL CONSTRAINT waitlist_entries_applicant_id_key UNIQUE,
    -- What others join through to move this entry up.
    referral_handle    text NOT NULL CONSTRAINT waitlist_entries_referral_handle_key UNIQUE,
    -- Who referred it: an entry, or a member (by user id), or nobody.
    referrer_entry_id  uuid REFERENCES waitlist_entries (id),
    referrer_member_id text,
    reason             text NOT NULL DEFAULT '',
    state              text NOT NULL DEFAULT 'waiting'
                       CHECK (state IN ('waiting', 'approved', 'rejected', 'admitted')),
    -- Applicants who joined through this entry's handle, and those of them
    -- who were admitted and redeemed.
    referrals          integer NOT NULL DEFAULT 0,
    redeemed_referrals integer NOT NULL DEFAULT 0,
    -- Places moved up so far, never above bump_cap (both fixed when the
    -- bump happens: the settings of the call that made it).
    bump               bigint NOT NULL DEFAULT 0 CHECK (bump >= 0),
    bump_cap           bigint NOT NULL CHECK (bump_cap >= 0),
    -- Places this entry's redemption gives its referrer entry (set at join).
    redeem_bump        bigint NOT NULL DEFAULT 0 CHECK (redeem_bump >= 0),
    -- The line is ordered by (score, seq): join order moved up by the bump.
    score              bigint GENERATED ALWAYS AS (seq - bump) STORED,
    -- Screening: abuse flags raised on joining, and the keyed digest of the
    -- client's IP prefix (never the address), for the IP reuse check.
    abuse_flags        text[] NOT NULL DEFAULT '{}',
    ip_hash            bytea,
    ip_key_id          integer,
    join_time          timestamptz NOT NULL DEFAULT now(),
    review_time        timestamptz,
    reviewed_by        text,
    review_reason      text,
    admit_time         timestamptz,
    -- The invitation minted on admission, redeemable only by applicant_id.
    invitation_id      uuid REFERENCES invitations (id),
    redeem_time        timestamptz
);

-- The line: entries still waiting (or approved), in order. Position reads
-- scan at most one bucket of it (waitlist_line_counts has the rest).
CREATE INDEX waitlist_line_idx ON waitlist_entries (score, seq) WHERE state IN ('waiting', 'approved');
-- Admission "oldest first" and the stats' joined-per-day ranges.
CREATE INDEX waitlist_join_time_idx ON waitlist_entries (join_time);
CREATE INDEX waitlist_admit_time_idx ON waitlist_entries (admit_time) WHERE admit_time IS NOT NULL;
-- The binding check on every redemption: one probe.
CREATE UNIQUE INDEX waitlist_invitation_idx ON waitlist_entries (invitation_id) WHERE invitation_id IS NOT NULL;
CREATE INDEX waitlist_ip_idx ON waitlist_entries (ip_hash, join_time) WHERE ip_hash IS NOT NULL;

-- Entries in the line per bucket of 1024 scores (score >> 10), kept without
-- hot rows like the other counters (store::Counters): writers append deltas,
-- the background fold moves them into counts, and a reader adds both.
CREATE TABLE waitlist_line_counts (
    bucket  bigint PRIMARY KEY,
    entries bigint NOT NULL
);
CREATE TABLE waitlist_line_deltas (
    bucket  bigint NOT NULL,
    entries bigint NOT NULL
);
CREATE INDEX waitlist_line_deltas_bucket_idx ON waitlist_line_deltas (bucket);

CREATE FUNCTION inv_waitlist_in_line(state text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$ SELECT state IN ('waiting', 'approved') $$;

-- Keeps the bucket counts: an entry leaves its old bucket and joins its new
-- one whenever it enters, leaves or moves in the line.
CREATE FUNCTION inv_waitlist_count_line() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND inv_waitlist_in_line(OLD.state)
       AND (TG_OP = 'DELETE' OR NOT inv_waitlist_in_line(NEW.state) OR OLD.score <> NEW.score) THEN
        INSERT INTO waitlist_line_deltas VALUES (OLD.score >> 10, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND inv_waitlist_in_line(NEW.state)
       AND (TG_OP = 'INSERT' OR NOT inv_waitlist_in_line(OLD.state) OR OLD.score <> NEW.score) THEN
        INSERT INTO waitlist_line_deltas VALUES (NEW.score >> 10, 1);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER waitlist_count_line AFTER INSERT OR UPDATE OF state, bump OR DELETE ON waitlist_entries
    FOR EACH ROW EXECUTE FUNCTION inv_waitlist_count_line();

-- The 1-based place of an entry in the line (NULL when it is not in it):
-- the entries of the buckets before its own, counted, plus those ahead of
-- it in its own bucket, scanned (at most about 1024 index entries).
CREATE FUNCTION inv_waitlist_position(e waitlist_entries) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
-- PL/pgSQL, not SQL: a SQL function this size is not inlined and is planned
-- again on every call (about 1 ms); PL/pgSQL keeps its plans per session.
BEGIN
    IF e.state NOT IN ('waiting', 'approved') THEN
        RETURN NULL;
    END IF;
    RETURN 1 + (SELECT coalesce(sum(entries), 0) FROM waitlist_line_counts WHERE bucket < (e.score >> 10))::bigint
             + (SELECT coalesce(sum(entries), 0) FROM waitlist_line_deltas WHERE bucket < (e.score >> 10))::bigint
             + (SELECT count(*) FROM waitlist_entries o
                WHERE o.state IN ('waiting', 'approved') AND o.score >= ((e.score >> 10) << 10)
                  AND (o.score, o.seq) < (e.score, e.seq));
END $$;

-- JoinWaitlist (service::waitlist) in one statement: screens the request
-- (the abuse settings of Redeem, as inv_screening), inserts the entry and
-- bumps its referrer entry, appends the joined event (encoded by the
-- service), and returns the entry. An applicant with an entry gets that
-- entry back unchanged (status 'EXISTING'), unless it was rejected: then,
-- after reapply_before, it joins again at the back of the line, and before
-- that status is REAPPLY_TOO_SOON (with the entry). Otherwise status is
-- 'JOINED' or a refusal reason (ALREADY_MEMBER, REFERRER_NOT_FOUND, the
-- screening's); 'GENERAL' when a concurrent call changed the entry (the
-- service retries).
-- A referrer is first looked up as a referral handle, then as a member.
CREATE FUNCTION inv_waitlist_join(entry_id uuid, applicant text, handle text, referrer text, memo text,
                                  places bigint, cap bigint, redeem_places bigint, reapply_before timestamptz,
                                  s inv_screening,
                                  event_id uuid, event_partition smallint, event_payload bytea,
                                  OUT status text, OUT entry waitlist_entries, OUT place bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    ref_entry waitlist_entries;
    ref_member text;
    flags text[] := '{}';
BEGIN
    SELECT * INTO entry FROM waitlist_entries WHERE applicant_id = applicant;
    IF FOUND AND entry.state = 'rejected' AND entry.review_time > reapply_before THEN
        status := 'REAPPLY_TOO_SOON';
        RETURN;
    ELSIF FOUND AND entry.state <> 'rejected' THEN
        status := 'EXISTING';
        place := inv_waitlist_position(entry);
        RETURN;
    END IF;
    IF cardinality(s.attempt_keys) > 0 AND s.attempt_mode <> 'off'
       AND (SELECT coalesce(max(failures), 0) FROM attempt_counters
            WHERE key_hash = ANY(s.attempt_keys) AND window_start = s.attempt_window) >= s.attempt_limit THEN
        IF s.attempt_mode = 'block' THEN
            status := 'TOO_MANY_ATTEMPTS';
            RETURN;
        END IF;
        flags := flags || 'ATTEMPT_LIMIT'::text;
    END IF;
    IF EXISTS (SELECT 1 FROM members WHERE user_id = applicant) THEN
        status := 'ALREADY_MEMBER';
        RETURN;
    END IF;
    IF referrer IS NOT NULL THEN
        SELECT * INTO ref_entry FROM waitlist_entries WHERE referral_handle = referrer;
        IF NOT FOUND THEN
            SELECT user_id INTO ref_member FROM members WHERE user_id = referrer;
            IF NOT FOUND THEN
                -- A guess at a handle counts against the attempt limit.
                IF s.attempt_mode <> 'off' THEN
                    PERFORM inv_count_failure(s.attempt_keys, s.attempt_window);
                END IF;
                status := 'REFERRER_NOT_FOUND';
                RETURN;
            END IF;
        END IF;
    END IF;
    IF s.disposable = 'block' THEN
        status := 'DISPOSABLE_EMAIL';
        RETURN;
    ELSIF s.disposable = 'flag' THEN
        flags := flags || 'DISPOSABLE_EMAIL'::text;
    END IF;
    IF cardinality(s.ip_hashes) > 0 THEN
        -- The waitlist's own IP checks: another join from this network in
        -- the window, or the referrer entry's own network.
        IF s.same_ip <> 'off' AND ref_entry.ip_hash = ANY(s.ip_hashes) AND ref_entry.join_time > s.ip_since THEN
            IF s.same_ip = 'block' THEN
                status := 'SAME_IP_AS_INVITER';
                RETURN;
            END IF;
            flags := flags || 'SAME_IP_AS_INVITER'::text;
        END IF;
        IF s.ip_reuse <> 'off' AND EXISTS (SELECT 1 FROM waitlist_entries
                                           WHERE ip_hash = ANY(s.ip_hashes) AND join_time > s.ip_since) THEN
            IF s.ip_reuse = 'block' THEN
                status := 'IP_ALREADY_USED';
                RETURN;
            END IF;
            flags := flags || 'IP_REUSE'::text;
        END IF;
    END IF;
    IF entry.id IS NOT NULL THEN
        -- A rejected applicant reapplies: back of the line, reviewed anew.
        UPDATE waitlist_entries
        SET state = 'waiting', seq = DEFAULT, reason = memo, join_time = now(), review_time = NULL,
            reviewed_by = NULL, review_reason = NULL, abuse_flags = flags
        WHERE id = entry.id AND state = 'rejected'
        RETURNING * INTO entry;
        IF NOT FOUND THEN
            status := 'GENERAL';
            RETURN;
        END IF;
        INSERT INTO outbox (id, event_type, partition, create_time, payload)
        VALUES (event_id, 'waitlist.joined', event_partition, entry.join_time, event_payload);
        status := 'JOINED';
        place := inv_waitlist_position(entry);
        RETURN;
    END IF;
    INSERT INTO waitlist_entries (id, applicant_id, referral_handle, referrer_entry_id, referrer_member_id, reason,
                                  bump_cap, redeem_bump, abuse_flags, ip_hash, ip_key_id)
    VALUES (entry_id, applicant, handle, ref_entry.id, ref_member, memo, cap,
            CASE WHEN ref_entry.id IS NULL THEN 0 ELSE redeem_places END, flags, s.ip_record,
            CASE WHEN s.ip_record IS NULL THEN NULL ELSE s.ip_key_id END)
    ON CONFLICT (applicant_id) DO NOTHING
    RETURNING * INTO entry;
    IF NOT FOUND THEN
        -- The same applicant joined concurrently: its entry (committed, so
        -- this statement's next snapshot sees it) is the answer.
        SELECT * INTO entry FROM waitlist_entries WHERE applicant_id = applicant;
        status := 'EXISTING';
        place := inv_waitlist_position(entry);
        RETURN;
    END IF;
    IF ref_entry.id IS NOT NULL THEN
        -- The row lock serializes concurrent joins through one handle, and
        -- each adds to the latest count: every bump counts once.
        UPDATE waitlist_entries
        SET referrals = referrals + 1, bump = least(bump + places, greatest(bump, bump_cap))
        WHERE id = ref_entry.id;
    END IF;
    INSERT INTO outbox (id, event_type, partition, create_time, payload)
    VALUES (event_id, 'waitlist.joined', event_partition, entry.join_time, event_payload);
    status := 'JOINED';
    place := inv_waitlist_position(entry);
END $$;

-- An admitted entry's invitation is redeemable only by its applicant, on
-- every path that spends a use (each inserts the redemption); its
-- redemption also moves the referrer entry up (redeem_bump places).
CREATE FUNCTION inv_waitlist_redeemed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    e waitlist_entries;
BEGIN
    SELECT * INTO e FROM waitlist_entries WHERE invitation_id = NEW.invitation_id;
    IF NOT FOUND THEN
        RETURN NEW;
    END IF;
    IF e.applicant_id <> NEW.invitee_id THEN
        RAISE EXCEPTION 'the invitation is bound to another applicant' USING ERRCODE = 'IV016';
    END IF;
    UPDATE waitlist_entries SET redeem_time = NEW.redeem_time WHERE id = e.id;
    IF e.referrer_entry_id IS NOT NULL THEN
        UPDATE waitlist_entries
        SET redeemed_referrals = redeemed_referrals + 1,
            bump = least(bump + e.redeem_bump, greatest(bump, bump_cap))
        WHERE id = e.referrer_entry_id;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER waitlist_redeemed BEFORE INSERT ON redemptions
    FOR EACH ROW EXECUTE FUNCTION inv_waitlist_redeemed();

-- GetStats: reviews in a window.
CREATE INDEX waitlist_review_time_idx ON waitlist_entries (review_time) WHERE review_time IS NOT NULL;
