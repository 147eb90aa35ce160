-- The nine merged tables of the workbook (see prodplan_pipeline/contract.py; a test checks that
-- names, types, nullability and keys agree). Domains (flags 0/1, severity 1-3, shift 1-3) are
-- data expectations reported by checks, not constraints: a bad value must not abort a merge.

CREATE TABLE core.ordens_fabrico (
    of_id                integer PRIMARY KEY,
    of_data_criacao      timestamp NOT NULL,
    of_data_acabamento   timestamp,
    of_produto_id        integer NOT NULL,
    of_fase_id           integer NOT NULL,
    of_data_transporte   timestamp,
    lead_time_seconds    double precision,
    is_on_time           boolean
);
CREATE INDEX ordens_fabrico_produto_idx ON core.ordens_fabrico (of_produto_id);
CREATE INDEX ordens_fabrico_acabamento_idx ON core.ordens_fabrico (of_data_acabamento);

-- Range-partitioned by month on event_time = coalesce(fim, inicio). A partitioned table's
-- primary key must include the partition key, so fase_of_id alone cannot be declared unique:
-- the merge keeps it unique by moving a row (delete + insert) when its event_time changes.
CREATE TABLE core.fases_ordem_fabrico (
    fase_of_id              integer NOT NULL,
    fase_of_of_id           integer NOT NULL,
    fase_of_inicio          timestamp NOT NULL,
    fase_of_fim             timestamp,
    fase_of_data_prevista   timestamp,
    fase_of_coeficiente     numeric NOT NULL,
    fase_of_coeficiente_x   numeric NOT NULL,
    fase_of_fase_id         integer NOT NULL,
    fase_of_peso            numeric NOT NULL,
    fase_of_retorno         smallint NOT NULL,
    fase_of_turno           smallint,
    fase_of_sequencia       integer NOT NULL,
    event_time              timestamp NOT NULL,
    duration_seconds        double precision,
    is_open                 boolean,
    is_done                 boolean,
    PRIMARY KEY (fase_of_id, event_time)
) PARTITION BY RANGE (event_time);
CREATE TABLE core.fases_ordem_fabrico_default PARTITION OF core.fases_ordem_fabrico DEFAULT;
-- Few indexes on purpose: each costs ~1 s per 500k rows on a first load. Lookups by fase_of_id
-- use the primary key (its leading column); a day's rows are found by partition pruning (one
-- month, ~7k rows) without an event_time index.
CREATE INDEX fases_ordem_fabrico_of_idx ON core.fases_ordem_fabrico (fase_of_of_id);
CREATE INDEX fases_ordem_fabrico_open_idx ON core.fases_ordem_fabrico (fase_of_fase_id)
    WHERE fase_of_fim IS NULL;

CREATE TABLE core.funcionarios_fase_ordem_fabrico (
    funcionario_fase_of_fase_of_id      integer NOT NULL,
    funcionario_fase_of_funcionario_id  integer NOT NULL,
    funcionario_fase_of_chefe           smallint NOT NULL,
    PRIMARY KEY (funcionario_fase_of_fase_of_id, funcionario_fase_of_funcionario_id)
);
CREATE INDEX funcionarios_fase_of_funcionario_idx
    ON core.funcionarios_fase_ordem_fabrico (funcionario_fase_of_funcionario_id);

-- No source key: (fingerprint of the row's values, occurrence among identical rows) is the key,
-- so genuine repeated defects all land and re-ingesting the same rows changes nothing.
CREATE TABLE core.erros_ordem_fabrico (
    row_fingerprint         text NOT NULL,
    occurrence              integer NOT NULL,
    erro_descricao          text NOT NULL,
    erro_of_id              integer NOT NULL,
    erro_fase_avaliacao     integer NOT NULL,
    ofch_gravidade          smallint NOT NULL,
    erro_fase_of_avaliacao  integer NOT NULL,
    erro_fase_of_culpada    integer,
    ofch_event_time         timestamp,
    PRIMARY KEY (row_fingerprint, occurrence)
);
CREATE INDEX erros_ordem_fabrico_of_idx ON core.erros_ordem_fabrico (erro_of_id);
CREATE INDEX erros_ordem_fabrico_avaliacao_idx ON core.erros_ordem_fabrico (erro_fase_of_avaliacao);
CREATE INDEX erros_ordem_fabrico_event_idx ON core.erros_ordem_fabrico (ofch_event_time);

CREATE TABLE core.funcionarios (
    funcionario_id      integer PRIMARY KEY,
    funcionario_nome    text NOT NULL,
    funcionario_activo  smallint NOT NULL
);

-- Inicio is part of the key and legitimately NULL in a few rows, so the key is a unique
-- constraint that treats NULLs as equal (PostgreSQL 15+) rather than a primary key.
CREATE TABLE core.funcionarios_fases_aptos (
    funcionario_fase_funcionario_id  integer NOT NULL,
    funcionario_fase_fase_id         integer NOT NULL,
    funcionario_fase_inicio          timestamp,
    CONSTRAINT funcionarios_fases_aptos_key UNIQUE NULLS NOT DISTINCT
        (funcionario_fase_funcionario_id, funcionario_fase_fase_id, funcionario_fase_inicio)
);

CREATE TABLE core.fases_catalogo (
    fase_id          integer PRIMARY KEY,
    fase_nome        text NOT NULL,
    fase_sequencia   integer NOT NULL,
    fase_de_producao smallint NOT NULL,
    fase_automatica  smallint NOT NULL
);

CREATE TABLE core.modelos (
    produto_id               integer PRIMARY KEY,
    produto_nome             text NOT NULL,
    produto_peso_desmolde    numeric,
    produto_peso_acabamento  numeric,
    produto_qtd_gel_deck     numeric,
    produto_qtd_gel_casco    numeric
);

CREATE TABLE core.fases_standard_modelos (
    produto_fase_produto_id     integer NOT NULL,
    produto_fase_fase_id        integer NOT NULL,
    produto_fase_sequencia      integer NOT NULL,
    produto_fase_coeficiente    numeric NOT NULL,
    produto_fase_coeficiente_x  numeric NOT NULL,
    PRIMARY KEY (produto_fase_produto_id, produto_fase_fase_id, produto_fase_sequencia)
);
