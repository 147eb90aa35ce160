-- The API's gated answers read ops.feature_gates, and `prodplan ingest` now measures the gates in
-- a run beside the analytics refresh: an answer labelled with a snapshot must have that
-- snapshot's gates too, so the labels wait for the gates' watermark as for every analytics
-- layer's (the column keeps its name: the API's label is "catching up" until all of them reflect
-- the snapshot).
CREATE OR REPLACE VIEW ops.snapshot_labels AS
SELECT f.run_id AS facts_run_id,
       coalesce(a.run_id, 0) AS aggregates_run_id,
       coalesce(a.run_id, 0) < f.run_id AS aggregates_catching_up
FROM (SELECT coalesce(max(run_id), 0) AS run_id FROM ops.ingestion_sheet_runs
      WHERE status = 'merged' AND rows_inserted + rows_updated + rows_deleted > 0) f
CROSS JOIN (SELECT CASE WHEN count(*) = 9 THEN min(value::bigint) END AS run_id
            FROM ops.watermarks
            WHERE name IN ('analytics.agg_phase_stats_daily', 'analytics.agg_order_stats_daily',
                           'analytics.agg_quality_daily', 'analytics.agg_wip_current',
                           'analytics.phase_flow_current', 'analytics.defect_pareto_current',
                           'analytics.orders_at_risk_current', 'analytics.materialized_views',
                           'feature_gates')) a;
