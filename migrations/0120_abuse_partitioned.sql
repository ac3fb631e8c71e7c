-- The abuse records that only live for their window (the IP hashes of
-- redemptions, the failed-attempt counters) partitioned by UTC day, so the
-- sweeper drops whole days instead of deleting row by row (issue 21). The
-- rows of the day the cutoff falls in are still deleted. The history's
-- monthly partitions and these days share one partition function.
--
-- Migration of an existing database: the old tables are renamed, the new
-- partitioned ones made with a partition for every day their rows span (and
-- the coming week), the rows copied, the old tables dropped, all in this
-- migration's transaction. The rows are bounded by the windows (30 days of
-- IP hashes by default: one row per redemption from an IP in that time), so
-- this is a copy of that many rows; it locks both tables meanwhile.

-- One partition per period (`day` or `month`) of a table partitioned by
-- range of a timestamptz, named <parent>_pYYYYMMDD or <parent>_pYYYYMM,
-- from `first` to `last` (dates, UTC) inclusive; made if missing (another
-- replica may race it). Returns how many it made.
CREATE FUNCTION inv_ensure_partitions(parent text, unit text, first date, last date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    step interval := CASE unit WHEN 'day' THEN interval '1 day' WHEN 'month' THEN interval '1 month' END;
    suffix text := CASE unit WHEN 'day' THEN 'YYYYMMDD' WHEN 'month' THEN 'YYYYMM' END;
    period date := date_trunc(unit, first)::date;
    name text;
    created integer := 0;
BEGIN
    IF step IS NULL THEN
        RAISE EXCEPTION 'unit must be day or month, not %', unit;
    END IF;
    WHILE period <= last LOOP
        name := format('%s_p%s', parent, to_char(period, suffix));
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', name, parent,
                               period::timestamp AT TIME ZONE 'UTC', (period + step)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION
                WHEN duplicate_table THEN NULL;  -- another replica made it
            END;
        END IF;
        period := (period + step)::date;
    END LOOP;
    RETURN created;
END $$;

ALTER TABLE redemption_ips RENAME TO redemption_ips_unpartitioned;
ALTER TABLE redemption_ips_unpartitioned RENAME CONSTRAINT redemption_ips_pkey TO redemption_ips_unpartitioned_pkey;
ALTER INDEX redemption_ips_ip_hash_idx RENAME TO redemption_ips_unpartitioned_ip_hash_idx;
ALTER INDEX redemption_ips_invitee_idx RENAME TO redemption_ips_unpartitioned_invitee_idx;
ALTER INDEX redemption_ips_redeem_time_idx RENAME TO redemption_ips_unpartitioned_redeem_time_idx;

CREATE TABLE redemption_ips (
    redemption_id bigint NOT NULL REFERENCES redemptions (id),
    invitee_id    text NOT NULL,
    ip_hash       bytea NOT NULL,
    key_id        integer NOT NULL,
    redeem_time   timestamptz NOT NULL DEFAULT now(),
    -- A unique key of a partitioned table must hold the partition key; a
    -- redemption is written once, so this is as unique as the old one.
    PRIMARY KEY (redemption_id, redeem_time)
) PARTITION BY RANGE (redeem_time);
-- IP reuse: any redemption from this prefix within the window.
CREATE INDEX redemption_ips_ip_hash_idx ON redemption_ips (ip_hash, redeem_time);
-- Same IP as the inviter: the inviter's own redemption; erasure.
CREATE INDEX redemption_ips_invitee_idx ON redemption_ips (invitee_id);

ALTER TABLE attempt_counters RENAME TO attempt_counters_unpartitioned;
ALTER TABLE attempt_counters_unpartitioned RENAME CONSTRAINT attempt_counters_pkey TO attempt_counters_unpartitioned_pkey;
ALTER INDEX attempt_counters_window_idx RENAME TO attempt_counters_unpartitioned_window_idx;

CREATE TABLE attempt_counters (
    key_hash     bytea NOT NULL,
    window_start timestamptz NOT NULL,
    failures     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (key_hash, window_start)
) PARTITION BY RANGE (window_start);

SELECT inv_ensure_partitions('redemption_ips', 'day',
    least(coalesce((SELECT min(redeem_time) AT TIME ZONE 'UTC' FROM redemption_ips_unpartitioned)::date,
                   (now() AT TIME ZONE 'UTC')::date),
          (now() AT TIME ZONE 'UTC')::date),
    (now() AT TIME ZONE 'UTC')::date + 7);
SELECT inv_ensure_partitions('attempt_counters', 'day',
    least(coalesce((SELECT min(window_start) AT TIME ZONE 'UTC' FROM attempt_counters_unpartitioned)::date,
                   (now() AT TIME ZONE 'UTC')::date),
          (now() AT TIME ZONE 'UTC')::date),
    (now() AT TIME ZONE 'UTC')::date + 7);

INSERT INTO redemption_ips (redemption_id, invitee_id, ip_hash, key_id, redeem_time)
    SELECT redemption_id, invitee_id, ip_hash, key_id, redeem_time FROM redemption_ips_unpartitioned;
INSERT INTO attempt_counters (key_hash, window_start, failures)
    SELECT key_hash, window_start, failures FROM attempt_counters_unpartitioned;
DROP TABLE redemption_ips_unpartitioned;
DROP TABLE attempt_counters_unpartitioned;

-- The history's months are kept by the same function now.
DROP FUNCTION inv_history_ensure_partitions(date, date);
