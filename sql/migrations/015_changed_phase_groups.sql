-- The phase statistics' groups (day, product, phase) whose facts a snapshot changed, written in
-- its commit beside ops.changed_days: a refresh of the phase statistics recomputes only those
-- groups (a 1% change: ~10k of 458k) when every snapshot it catches up with recorded them. A
-- first load records none (every group is new), nor did the runs before this migration:
-- ops.ingestion_runs.phase_groups says which runs did; a refresh over any other recomputes
-- whole days, as before.
CREATE TABLE ops.changed_phase_groups (
    run_id     bigint NOT NULL REFERENCES ops.ingestion_runs ON DELETE CASCADE,
    day        date NOT NULL,
    produto_id integer NOT NULL,
    fase_id    integer NOT NULL,
    PRIMARY KEY (run_id, day, produto_id, fase_id)
);
ALTER TABLE ops.ingestion_runs ADD COLUMN phase_groups boolean NOT NULL DEFAULT true;
UPDATE ops.ingestion_runs SET phase_groups = false;
