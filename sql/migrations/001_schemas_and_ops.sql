-- The warehouse's schemas and its operational tables (what ran, what it found, what it serves).
-- staging: UNLOGGED landing tables, one per sheet, rows as text plus the Excel row number
-- core: the merged, typed tables      quarantine: rejected rows with their reasons
-- ops: runs, checks, gates, watermarks, cache version      analytics: aggregates and views
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS quarantine;
CREATE SCHEMA IF NOT EXISTS ops;
CREATE SCHEMA IF NOT EXISTS analytics;

CREATE TABLE ops.schema_migrations (
    version     text PRIMARY KEY,
    filename    text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ops.ingestion_runs (
    run_id           bigserial PRIMARY KEY,
    dagster_run_id   text UNIQUE,
    started_at       timestamptz NOT NULL DEFAULT now(),
    -- when the merge and the reconciliation checks are done (downstream assets not included)
    finished_at      timestamptz,
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'succeeded', 'failed', 'check_failed')),
    workbook_path    text,
    workbook_sha256  text,
    forced           boolean NOT NULL DEFAULT false,
    message          text
);
CREATE INDEX ingestion_runs_status_idx ON ops.ingestion_runs (status, run_id DESC);

CREATE TABLE ops.ingestion_sheet_runs (
    run_id          bigint NOT NULL REFERENCES ops.ingestion_runs ON DELETE CASCADE,
    sheet           text NOT NULL,           -- the sheet's name as in the workbook
    sheet_sha256    text,
    -- staged: read and landed in staging; merged: in core; skipped_unchanged: same content as
    -- the last merged run (staging and core already hold it); refused: the shrink guard stopped it
    status          text NOT NULL
                    CHECK (status IN ('staged', 'merged', 'skipped_unchanged', 'failed', 'refused')),
    staged_run_id   bigint,          -- the run whose staging rows and rejects this sheet run uses
    message         text,
    rows_excel      bigint,
    rows_inserted   bigint,
    rows_updated    bigint,
    rows_unchanged  bigint,
    rows_deleted    bigint,
    rows_duplicate  bigint,
    rows_rejected   bigint,
    rows_in_core    bigint,          -- core rows whose key is in this snapshot, after the merge
    reconciled      boolean,         -- the count check: excel = in_core + duplicate + rejected
    seconds         double precision,
    PRIMARY KEY (run_id, sheet)
);

-- Days whose source rows an ingestion inserted, updated or deleted: what the changed-days
-- sensor refreshes. kind: phase_event (fases event_time), order_finish, defect.
CREATE TABLE ops.changed_days (
    run_id  bigint NOT NULL REFERENCES ops.ingestion_runs ON DELETE CASCADE,
    kind    text NOT NULL CHECK (kind IN ('phase_event', 'order_finish', 'defect')),
    day     date NOT NULL,
    PRIMARY KEY (run_id, kind, day)
);

-- Rows kept but flagged (orphans, inverted dates ...); replaced as a whole by each evaluation.
CREATE TABLE ops.data_quality_issues (
    issue_code   text NOT NULL,
    table_name   text NOT NULL,
    record_key   text NOT NULL,
    detail       text,
    detected_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX data_quality_issues_code_idx ON ops.data_quality_issues (issue_code);

CREATE TABLE ops.feature_gates (
    feature       text PRIMARY KEY,
    relationship  text NOT NULL,
    match_rate    double precision CHECK (match_rate BETWEEN 0 AND 1),
    numerator     bigint,
    denominator   bigint,
    threshold     double precision NOT NULL CHECK (threshold BETWEEN 0 AND 1),
    status        text NOT NULL CHECK (status IN ('SUPPORTED', 'NOT_SUPPORTED_BY_DATA')),
    reason        text NOT NULL,
    evaluated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ops.watermarks (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row: bumped after every successful ingestion, backfill and aggregate refresh, so API
-- caches keyed on it invalidate.
CREATE TABLE ops.cache_version (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ops.cache_version (singleton, version) VALUES (true, 0);
