-- Planner analytics, measured as of the export's own time, not the clock.

-- The newest plausible phase start or end in the snapshot this run committed: what "now" is for
-- every figure about that snapshot (WIP ages, throughput windows, ETAs).
ALTER TABLE ops.ingestion_runs ADD COLUMN data_as_of timestamp;
UPDATE ops.ingestion_runs r SET data_as_of = (
    SELECT greatest(max(f.fase_of_inicio) FILTER (WHERE f.fase_of_inicio >= timestamp '1990-01-01'
                                                    AND f.fase_of_inicio < timestamp '2100-01-01'),
                    max(f.fase_of_fim) FILTER (WHERE f.fase_of_fim >= timestamp '1990-01-01'
                                                 AND f.fase_of_fim < timestamp '2100-01-01'))
    FROM core.fases_ordem_fabrico f)
WHERE r.run_id = (SELECT max(run_id) FROM ops.ingestion_sheet_runs
                  WHERE status = 'merged' AND rows_inserted + rows_updated + rows_deleted > 0);

-- Per phase: work in progress, throughput over the last 30 days, Little's-law wait.
CREATE TABLE analytics.phase_flow_current (
    fase_id              integer PRIMARY KEY,
    fase_nome            text,
    wip                  bigint NOT NULL,
    finished_30d         bigint NOT NULL,
    throughput_per_day   double precision NOT NULL,
    expected_wait_days   double precision,
    p90_wip_age_seconds  double precision,
    data_as_of           timestamp NOT NULL
);

-- Defects counted by what a Pareto groups them by; a key that is unknown says why.
CREATE TABLE analytics.defect_pareto_current (
    day                 date,
    erro_descricao      text NOT NULL,
    culprit_fase_id     integer,
    culprit_unknown     text,  -- no_culprit_given | culprit_phase_row_missing
    produto_id          integer,
    product_unknown     text,  -- order_missing
    n                   bigint NOT NULL
);
CREATE INDEX defect_pareto_current_day_idx ON analytics.defect_pareto_current (day);

-- Open orders with a due date: their ETA from the remaining standard-route phases, or why
-- they could not be assessed.
CREATE TABLE analytics.orders_at_risk_current (
    of_id                       integer PRIMARY KEY,
    produto_id                  integer NOT NULL,
    due_date                    timestamp NOT NULL,
    unassessed_reason           text,  -- no_route | no_duration_history | due_date_implausible
    remaining_phases            integer,
    expected_remaining_seconds  double precision,
    eta                         timestamp,
    slack_seconds               double precision,
    risk_rank                   integer UNIQUE,  -- 1 = least slack; NULL when not assessed
    data_as_of                  timestamp NOT NULL
);

-- Every analytics layer now counts in the snapshot the aggregates reflect.
CREATE OR REPLACE VIEW ops.snapshot_labels AS
SELECT f.run_id AS facts_run_id,
       coalesce(a.run_id, 0) AS aggregates_run_id,
       coalesce(a.run_id, 0) < f.run_id AS aggregates_catching_up
FROM (SELECT coalesce(max(run_id), 0) AS run_id FROM ops.ingestion_sheet_runs
      WHERE status = 'merged' AND rows_inserted + rows_updated + rows_deleted > 0) f
CROSS JOIN (SELECT CASE WHEN count(*) = 8 THEN min(value::bigint) END AS run_id
            FROM ops.watermarks
            WHERE name IN ('analytics.agg_phase_stats_daily', 'analytics.agg_order_stats_daily',
                           'analytics.agg_quality_daily', 'analytics.agg_wip_current',
                           'analytics.phase_flow_current', 'analytics.defect_pareto_current',
                           'analytics.orders_at_risk_current', 'analytics.materialized_views')) a;
