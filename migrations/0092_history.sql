-- The history of every change made through the API (docs/design.md,
-- "History"): one row per successful mutating call, appended in the call's
-- own transaction, so a refused or rolled-back call leaves none. Rows are
-- never updated, except by EraseMember, which rewrites the member's user id
-- to its tombstone (and blanks reasons written about it) like everywhere
-- else. Redemptions, reservations, quota and reward grants and conversions
-- are not copied here: ListHistory reads them from their own tables.
--
-- Partitioned by UTC month of occur_time (history_pYYYYMM), so retention
-- (--history-retention; default: kept) drops a month that ended before the
-- cutoff instead of deleting rows. Rows are only ever written at now(), so
-- a month that has ended takes no new rows. Every replica makes the current
-- and the next two months' partitions at start and every maintenance
-- interval (inv_history_ensure_partitions); there is no default partition,
-- so that a month can be detached concurrently.

CREATE TABLE history (
    id             bigint GENERATED ALWAYS AS IDENTITY,
    occur_time     timestamptz NOT NULL DEFAULT now(),
    -- The authenticated caller as recorded on the change ("admin",
    -- "signup for alice" when a caller acts for someone it names).
    caller         text NOT NULL,
    -- mint, revoke, update, restore, member_mint, privileges, reparent,
    -- erase, waitlist_review, waitlist_admit, reward_review,
    -- conversion_void, rekey (domain::history::Operation).
    operation      text NOT NULL,
    -- Targets: the invitations named by the call, the batch a mint made
    -- (its invitations are targets through it), the members named.
    invitation_ids uuid[] NOT NULL DEFAULT '{}',
    batch_id       uuid,
    user_ids       text[] NOT NULL DEFAULT '{}',
    reason         text NOT NULL DEFAULT '',
    request_id     text NOT NULL DEFAULT '',
    -- Small facts of the change (counts, changed fields, decisions), as
    -- string values; never a user id (those go in user_ids, which erasure
    -- rewrites).
    details        jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (occur_time, id)
) PARTITION BY RANGE (occur_time);
CREATE INDEX history_invitation_ids_idx ON history USING gin (invitation_ids);
CREATE INDEX history_user_ids_idx ON history USING gin (user_ids);
CREATE INDEX history_batch_id_idx ON history (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX history_caller_idx ON history (caller, occur_time);
CREATE INDEX history_operation_idx ON history (operation, occur_time);

-- Creates the partitions of the UTC months from `first`'s to `last`'s that
-- do not exist yet; returns how many it created. Safe to run from several
-- replicas at once (one wins each CREATE).
CREATE FUNCTION inv_history_ensure_partitions(first date, last date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month date := date_trunc('month', first)::date;
    name text;
    created integer := 0;
BEGIN
    WHILE month <= last LOOP
        name := format('history_p%s', to_char(month, 'YYYYMM'));
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF history FOR VALUES FROM (%L) TO (%L)',
                               name, month::timestamp AT TIME ZONE 'UTC',
                               (month + interval '1 month')::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION
                WHEN duplicate_table THEN NULL;  -- another replica made it
            END;
        END IF;
        month := (month + interval '1 month')::date;
    END LOOP;
    RETURN created;
END $$;

SELECT inv_history_ensure_partitions((now() AT TIME ZONE 'UTC')::date,
                                     ((now() AT TIME ZONE 'UTC') + interval '2 months')::date);
