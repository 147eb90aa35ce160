"""What ``prodplan status`` reports: schema, recent ingestions, the snapshot each layer reflects,
gates, cache version, partitions."""

from __future__ import annotations

from prodplan_pipeline.warehouse.connection import fetch_dicts
from prodplan_pipeline.warehouse.monthly_partitions import partition_summary

RECENT_RUNS = """
    SELECT run_id, status, started_at, finished_at, workbook_sha256, message
    FROM ops.ingestion_runs ORDER BY run_id DESC LIMIT %s"""
GATES = """
    SELECT feature, relationship, match_rate, threshold, status, reason
    FROM ops.feature_gates ORDER BY feature"""
SCHEMA = """
    SELECT count(*) AS migrations_applied, max(version) AS latest, max(applied_at) AS applied_at
    FROM ops.schema_migrations"""
CACHE_VERSION = "SELECT version, updated_at FROM ops.cache_version"
SNAPSHOT = "SELECT facts_run_id, aggregates_run_id, aggregates_catching_up FROM ops.snapshot_labels"


def collect_status(conn, recent: int = 5) -> dict:
    with conn.cursor() as cur:
        status = {
            "schema": fetch_dicts(cur, SCHEMA)[0],
            "ingestion_runs": fetch_dicts(cur, RECENT_RUNS, (recent,)),
            "feature_gates": fetch_dicts(cur, GATES),
            "cache_version": fetch_dicts(cur, CACHE_VERSION)[0],
            "snapshot": fetch_dicts(cur, SNAPSHOT)[0],
        }
    status["fases_partitions"] = partition_summary(conn)
    return status
