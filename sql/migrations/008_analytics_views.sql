-- Materialized views over the aggregates, for the API. Each has a unique index so that it can
-- be refreshed CONCURRENTLY (readers never wait for, nor see half of, a refresh).
CREATE MATERIALIZED VIEW analytics.mv_phase_durations_by_model AS
SELECT produto_id, fase_id, sum(n) AS n, sum(sum_duration_seconds) / sum(n) AS mean_duration_seconds,
       min(min_duration_seconds) AS min_duration_seconds, max(max_duration_seconds) AS max_duration_seconds,
       sum(n_rework) AS n_rework, min(snapshot_date) AS first_day, max(snapshot_date) AS last_day
FROM analytics.agg_phase_stats_daily GROUP BY produto_id, fase_id;
CREATE UNIQUE INDEX mv_phase_durations_by_model_key ON analytics.mv_phase_durations_by_model (produto_id, fase_id);

CREATE MATERIALIZED VIEW analytics.mv_order_leadtime_by_model AS
SELECT produto_id, sum(n) AS n, sum(sum_lead_time_seconds) / nullif(sum(n_with_lead_time), 0) AS mean_lead_time_seconds,
       sum(n_on_time) AS n_on_time, sum(n_late) AS n_late, sum(n_no_due_date) AS n_no_due_date,
       sum(n_on_time)::double precision / nullif(sum(n_on_time) + sum(n_late), 0) AS on_time_rate
FROM analytics.agg_order_stats_daily GROUP BY produto_id;
CREATE UNIQUE INDEX mv_order_leadtime_by_model_key ON analytics.mv_order_leadtime_by_model (produto_id);

CREATE MATERIALIZED VIEW analytics.mv_quality_by_phase AS
SELECT fase_avaliacao_id, gravidade, sum(n_defects) AS n_defects, sum(n_orders) AS n_order_days
FROM analytics.agg_quality_daily GROUP BY fase_avaliacao_id, gravidade;
CREATE UNIQUE INDEX mv_quality_by_phase_key ON analytics.mv_quality_by_phase (fase_avaliacao_id, gravidade);

CREATE MATERIALIZED VIEW analytics.mv_wip_by_phase_current AS
SELECT fase_id, sum(n_open_phases) AS n_open_phases, sum(n_orders) AS n_orders,
       max(max_age_seconds) AS max_age_seconds, max(as_of) AS as_of
FROM analytics.agg_wip_current GROUP BY fase_id;
CREATE UNIQUE INDEX mv_wip_by_phase_current_key ON analytics.mv_wip_by_phase_current (fase_id);
