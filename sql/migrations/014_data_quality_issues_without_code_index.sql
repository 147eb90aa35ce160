-- ops.data_quality_issues is rewritten per issue kind by each ingestion (~291k rows on the real
-- export, 287k of one kind) and read whole (counts by kind, the reports): its index on issue_code
-- served no lookup a scan of the table does not, and cost 0.3-0.5 s of a first load's ~1.9 s of
-- issue writes (measured in one transaction, rolled back, with and without it).
DROP INDEX IF EXISTS ops.data_quality_issues_code_idx;
