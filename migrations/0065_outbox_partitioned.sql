-- The outbox partitioned by day of create_time (docs/design.md, "Outbox
-- partitions"), so pruning sent events is dropping a day's partition instead
-- of deleting rows one by one (the outbox takes every event: at a launch's
-- peak, tens of millions of rows a day). Partitions are named
-- outbox_pYYYYMMDD (UTC days); the maintenance task of every replica creates
-- the coming three days' (inv_outbox_ensure_partitions) at start and every
-- interval, and drops a day once every event in it was sent before the
-- retention cutoff (store::outbox: DETACH PARTITION CONCURRENTLY, so writers
-- are never blocked, then DROP). There is no default partition: it would
-- forbid the concurrent detach, and with three days made ahead by every
-- replica a missing day means no replica ran for three days.
--
-- Existing databases: this migration copies the outbox (one INSERT ... SELECT
-- of at most the retention's worth of rows) under the lock the migration
-- holds; the service is stopped meanwhile (docs/operations.md).

ALTER TABLE outbox RENAME TO outbox_unpartitioned;
ALTER INDEX outbox_pending_idx RENAME TO outbox_unpartitioned_pending_idx;
ALTER INDEX outbox_sent_time_idx RENAME TO outbox_unpartitioned_sent_time_idx;
ALTER TABLE outbox_unpartitioned RENAME CONSTRAINT outbox_pkey TO outbox_unpartitioned_pkey;
ALTER TABLE outbox_unpartitioned RENAME CONSTRAINT outbox_partition_check TO outbox_unpartitioned_partition_check;

CREATE TABLE outbox (
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    id          uuid NOT NULL,
    event_type  text NOT NULL,
    partition   smallint NOT NULL CHECK (partition >= 0 AND partition < 32),
    payload     bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    sent_time   timestamptz,
    PRIMARY KEY (seq, create_time)
) PARTITION BY RANGE (create_time);
CREATE INDEX outbox_pending_idx ON outbox (partition, seq) WHERE sent_time IS NULL;
CREATE INDEX outbox_sent_time_idx ON outbox (sent_time) WHERE sent_time IS NOT NULL;

-- Creates the partitions of the UTC days `first` to `last` that do not exist
-- yet; returns how many it created. Safe to run from several replicas at
-- once (one wins each CREATE).
CREATE FUNCTION inv_outbox_ensure_partitions(first date, last date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date;
    created integer := 0;
BEGIN
    FOR i IN 0..(last - first) LOOP
        day := first + i;
        IF to_regclass(format('outbox_p%s', to_char(day, 'YYYYMMDD'))) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF outbox FOR VALUES FROM (%L) TO (%L)',
                               format('outbox_p%s', to_char(day, 'YYYYMMDD')),
                               day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION
                WHEN duplicate_table THEN NULL;  -- another replica made it
            END;
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- Every day that has rows (sent ones within the retention, and pending ones
-- however old), through three days ahead.
SELECT inv_outbox_ensure_partitions(
    least(coalesce((SELECT min(create_time) AT TIME ZONE 'UTC' FROM outbox_unpartitioned)::date,
                   (now() AT TIME ZONE 'UTC')::date),
          (now() AT TIME ZONE 'UTC')::date),
    (now() AT TIME ZONE 'UTC')::date + 3);

INSERT INTO outbox (seq, id, event_type, partition, payload, create_time, sent_time)
    OVERRIDING SYSTEM VALUE
    SELECT seq, id, event_type, partition, payload, create_time, sent_time FROM outbox_unpartitioned;
SELECT setval(pg_get_serial_sequence('outbox', 'seq'), coalesce((SELECT max(seq) FROM outbox), 0) + 1, false);
DROP TABLE outbox_unpartitioned;
