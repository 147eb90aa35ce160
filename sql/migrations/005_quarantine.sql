-- One row per rejected Excel row: which run, sheet and row, why, and the raw row as JSON, so a
-- person can find and fix the cell in the workbook.
CREATE TABLE quarantine.rejects (
    reject_id    bigserial PRIMARY KEY,
    run_id       bigint NOT NULL REFERENCES ops.ingestion_runs ON DELETE CASCADE,
    sheet        text NOT NULL,
    excel_row    integer NOT NULL,
    reason_code  text NOT NULL CHECK (reason_code IN ('required_null', 'bad_type', 'duplicate_key', 'blank_row')),
    column_name  text,
    raw_value    text,
    detail       text,
    raw_row      jsonb NOT NULL,
    rejected_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejects_run_sheet_idx ON quarantine.rejects (run_id, sheet);
