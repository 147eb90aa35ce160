-- Daily aggregates (one partition per snapshot_date, replaced atomically) and current WIP.
-- Column names are a public interface (PIPELINE.md); durations and ages are in seconds.
CREATE TABLE analytics.agg_phase_stats_daily (
    snapshot_date         date NOT NULL,
    produto_id            integer NOT NULL,
    fase_id               integer NOT NULL,
    n                     bigint NOT NULL,
    sum_duration_seconds  double precision NOT NULL,
    min_duration_seconds  double precision,
    max_duration_seconds  double precision,
    p50_duration_seconds  double precision,
    p90_duration_seconds  double precision,
    n_rework              bigint NOT NULL,
    PRIMARY KEY (snapshot_date, produto_id, fase_id)
);

CREATE TABLE analytics.agg_order_stats_daily (
    snapshot_date          date NOT NULL,
    produto_id             integer NOT NULL,
    n                      bigint NOT NULL,
    sum_lead_time_seconds  double precision,
    p50_lead_time_seconds  double precision,
    p90_lead_time_seconds  double precision,
    n_on_time              bigint NOT NULL,
    n_late                 bigint NOT NULL,
    n_no_due_date          bigint NOT NULL,
    n_with_lead_time       bigint NOT NULL,  -- finished after creation: the lead times' count
    PRIMARY KEY (snapshot_date, produto_id)
);

CREATE TABLE analytics.agg_quality_daily (
    snapshot_date      date NOT NULL,
    produto_id         integer NOT NULL,
    fase_avaliacao_id  integer NOT NULL,
    gravidade          smallint NOT NULL,
    n_defects          bigint NOT NULL,
    n_orders           bigint NOT NULL,
    PRIMARY KEY (snapshot_date, produto_id, fase_avaliacao_id, gravidade)
);

CREATE TABLE analytics.agg_wip_current (
    fase_id           integer NOT NULL,
    produto_id        integer NOT NULL,
    n_open_phases     bigint NOT NULL,
    n_orders          bigint NOT NULL,
    mean_age_seconds  double precision,
    p90_age_seconds   double precision,
    max_age_seconds   double precision,
    as_of             timestamptz NOT NULL,
    PRIMARY KEY (fase_id, produto_id)
);
