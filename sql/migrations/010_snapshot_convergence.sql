-- One snapshot, one commit; every layer below core converges to the latest snapshot from a
-- durable record of what it reflects (never from one run's delta).

-- 'interrupted': the process running it stopped (killed, crashed) before the run finished.
ALTER TABLE ops.ingestion_runs DROP CONSTRAINT ingestion_runs_status_check;
ALTER TABLE ops.ingestion_runs ADD CONSTRAINT ingestion_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'check_failed', 'interrupted'));

-- 'rolled_back': the sheet merged, but another sheet of the same snapshot was refused or
-- failed, so the snapshot's single commit was rolled back and core kept the previous snapshot.
ALTER TABLE ops.ingestion_sheet_runs DROP CONSTRAINT ingestion_sheet_runs_status_check;
ALTER TABLE ops.ingestion_sheet_runs ADD CONSTRAINT ingestion_sheet_runs_status_check
    CHECK (status IN ('staged', 'merged', 'skipped_unchanged', 'failed', 'refused', 'rolled_back'));
-- Rows in the core table right after the run's commit: a skipped sheet is reconciled from this
-- durable figure, never from staging (UNLOGGED: crash recovery empties it).
ALTER TABLE ops.ingestion_sheet_runs ADD COLUMN core_rows bigint;

-- The snapshot (ingestion run) each day of each daily aggregate reflects. A day is pending when
-- a later snapshot changed it (ops.changed_days); whatever was killed, the next refresh finds it.
CREATE TABLE ops.aggregate_days (
    aggregate        text NOT NULL,
    day              date NOT NULL,
    snapshot_run_id  bigint NOT NULL,
    refreshed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate, day)
);
CREATE INDEX changed_days_day_idx ON ops.changed_days (day, run_id);

-- What the API tells its readers: the snapshot its facts reflect (the last ingestion run that
-- changed core) and the one its aggregates reflect (the least caught-up analytics layer).
CREATE VIEW ops.snapshot_labels AS
SELECT f.run_id AS facts_run_id,
       coalesce(a.run_id, 0) AS aggregates_run_id,
       coalesce(a.run_id, 0) < f.run_id AS aggregates_catching_up
FROM (SELECT coalesce(max(run_id), 0) AS run_id FROM ops.ingestion_sheet_runs
      WHERE status = 'merged' AND rows_inserted + rows_updated + rows_deleted > 0) f
CROSS JOIN (SELECT CASE WHEN count(*) = 5 THEN min(value::bigint) END AS run_id
            FROM ops.watermarks
            WHERE name IN ('analytics.agg_phase_stats_daily', 'analytics.agg_order_stats_daily',
                           'analytics.agg_quality_daily', 'analytics.agg_wip_current',
                           'analytics.materialized_views')) a;
