-- Monthly partitions of core.fases_ordem_fabrico, created on demand for the data's months (by
-- ingestion before a merge, and by the monthly maintenance schedule six months ahead).
-- Rows that already sit in the default partition for a new month are moved into it, in the same
-- transaction, because PostgreSQL refuses to attach a range the default partition still holds.
CREATE FUNCTION core.ensure_fases_partitions(p_first date, p_last date)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start date := date_trunc('month', p_first)::date;
    month_end   date;
    part        text;
    created     integer := 0;
BEGIN
    IF p_first IS NULL OR p_last IS NULL THEN
        RETURN 0;
    END IF;
    -- Serialise concurrent callers: two sessions must not both create the same month.
    PERFORM pg_advisory_xact_lock(hashtext('prodplan.fases_partitions'));
    WHILE month_start <= p_last LOOP
        month_end := (month_start + interval '1 month')::date;
        part := format('fases_ordem_fabrico_p%s', to_char(month_start, 'YYYYMM'));
        IF to_regclass(format('core.%I', part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE core.%I (LIKE core.fases_ordem_fabrico INCLUDING DEFAULTS)', part);
            EXECUTE format(
                'WITH moved AS (DELETE FROM core.fases_ordem_fabrico_default
                                WHERE event_time >= %L AND event_time < %L RETURNING *)
                 INSERT INTO core.%I SELECT * FROM moved', month_start, month_end, part);
            EXECUTE format(
                'ALTER TABLE core.fases_ordem_fabrico ATTACH PARTITION core.%I
                 FOR VALUES FROM (%L) TO (%L)', part, month_start, month_end);
            created := created + 1;
        END IF;
        month_start := month_end;
    END LOOP;
    RETURN created;
END
$$;
