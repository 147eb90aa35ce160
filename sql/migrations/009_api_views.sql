-- Per-employee work, for /api/kpis/by-employee: the phase rows each employee worked
-- (FuncionariosFaseOrdemFabrico joined to the phases it names). Only links whose phase row exists
-- count; the kpis_by_employee gate says whether enough of them do for the figures to mean much.
CREATE MATERIALIZED VIEW analytics.mv_employee_phase_stats AS
SELECT l.funcionario_fase_of_funcionario_id AS funcionario_id,
       count(*) AS n_phases,
       count(*) FILTER (WHERE l.funcionario_fase_of_chefe = 1) AS n_as_chief,
       count(f.duration_seconds) AS n_with_duration,
       coalesce(sum(f.duration_seconds), 0) AS sum_duration_seconds,
       avg(f.duration_seconds) AS mean_duration_seconds,
       count(*) FILTER (WHERE f.fase_of_retorno = 1) AS n_rework,
       min(f.event_time)::date AS first_day,
       max(f.event_time)::date AS last_day
FROM core.funcionarios_fase_ordem_fabrico l
JOIN core.fases_ordem_fabrico f ON f.fase_of_id = l.funcionario_fase_of_fase_of_id
GROUP BY l.funcionario_fase_of_funcionario_id;
CREATE UNIQUE INDEX mv_employee_phase_stats_key ON analytics.mv_employee_phase_stats (funcionario_id);

-- The lead-time view again, now also with its sum and count, so that the API can combine
-- products (a mean of means would weigh a product with 3 orders like one with 3,000).
DROP MATERIALIZED VIEW analytics.mv_order_leadtime_by_model;
CREATE MATERIALIZED VIEW analytics.mv_order_leadtime_by_model AS
SELECT produto_id, sum(n) AS n, sum(sum_lead_time_seconds) / nullif(sum(n_with_lead_time), 0) AS mean_lead_time_seconds,
       sum(n_on_time) AS n_on_time, sum(n_late) AS n_late, sum(n_no_due_date) AS n_no_due_date,
       sum(n_on_time)::double precision / nullif(sum(n_on_time) + sum(n_late), 0) AS on_time_rate,
       sum(sum_lead_time_seconds) AS sum_lead_time_seconds, sum(n_with_lead_time) AS n_with_lead_time
FROM analytics.agg_order_stats_daily GROUP BY produto_id;
CREATE UNIQUE INDEX mv_order_leadtime_by_model_key ON analytics.mv_order_leadtime_by_model (produto_id);
