-- What a stored expectation outcome needs to be reported again as it was first reported, by
-- any process: how many expectations were evaluated (the suite may grow since), how long they
-- took, and the Dagster run that evaluated them (that run's check step reports the outcome as
-- evaluated now, any later run as carried over). NULL in outcomes stored before this migration.
ALTER TABLE ops.expectation_results
    ADD COLUMN evaluated_expectations integer,
    ADD COLUMN duration_seconds double precision,
    ADD COLUMN dagster_run_id text;
