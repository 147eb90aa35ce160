-- The latest data-expectation outcome per core table. A table that no ingestion has changed
-- since it was validated keeps its outcome (carried over, with its date) instead of paying
-- Great Expectations' ~4 s import and a full validation again.
CREATE TABLE ops.expectation_results (
    table_name          text PRIMARY KEY,
    success             boolean NOT NULL,
    summary             text NOT NULL,
    failed_expectations integer NOT NULL,
    unexpected_total    bigint NOT NULL,
    details_markdown    text NOT NULL,
    ingestion_run_id    bigint,
    evaluated_at        timestamptz NOT NULL DEFAULT now()
);
