-- GENERATED from prodplan_pipeline/contract.py by prodplan_pipeline.warehouse.ddl: do not edit.
-- Landing tables: every data row of a sheet with its Excel row number, typed as in core by the
-- reader (cells that failed typing are NULL here and the row is marked rejected; its raw text is
-- in quarantine.rejects). key_repeated: the reader saw the row's key more than once; the merge
-- then sets duplicate_of to the kept row's Excel row for the other rows sharing that key.
-- UNLOGGED: rebuilt from the workbook on every run (no WAL, faster COPY).

-- sheet OrdensFabrico
CREATE UNLOGGED TABLE staging.ordens_fabrico_raw (
    excel_row           integer NOT NULL,
    rejected            boolean NOT NULL,
    key_repeated        boolean NOT NULL,
    duplicate_of        integer,
    of_id               integer,
    of_data_criacao     timestamp without time zone,
    of_data_acabamento  timestamp without time zone,
    of_produto_id       integer,
    of_fase_id          integer,
    of_data_transporte  timestamp without time zone
);

-- sheet FasesOrdemFabrico
CREATE UNLOGGED TABLE staging.fases_ordem_fabrico_raw (
    excel_row              integer NOT NULL,
    rejected               boolean NOT NULL,
    key_repeated           boolean NOT NULL,
    duplicate_of           integer,
    fase_of_id             integer,
    fase_of_of_id          integer,
    fase_of_inicio         timestamp without time zone,
    fase_of_fim            timestamp without time zone,
    fase_of_data_prevista  timestamp without time zone,
    fase_of_coeficiente    numeric,
    fase_of_coeficiente_x  numeric,
    fase_of_fase_id        integer,
    fase_of_peso           numeric,
    fase_of_retorno        smallint,
    fase_of_turno          smallint,
    fase_of_sequencia      integer
);

-- sheet FuncionariosFaseOrdemFabrico
CREATE UNLOGGED TABLE staging.funcionarios_fase_ordem_fabrico_raw (
    excel_row                           integer NOT NULL,
    rejected                            boolean NOT NULL,
    key_repeated                        boolean NOT NULL,
    duplicate_of                        integer,
    funcionario_fase_of_fase_of_id      integer,
    funcionario_fase_of_funcionario_id  integer,
    funcionario_fase_of_chefe           smallint
);

-- sheet OrdemFabricoErros
CREATE UNLOGGED TABLE staging.erros_ordem_fabrico_raw (
    excel_row               integer NOT NULL,
    rejected                boolean NOT NULL,
    key_repeated            boolean NOT NULL,
    duplicate_of            integer,
    erro_descricao          text,
    erro_of_id              integer,
    erro_fase_avaliacao     integer,
    ofch_gravidade          smallint,
    erro_fase_of_avaliacao  integer,
    erro_fase_of_culpada    integer
);

-- sheet Funcionarios
CREATE UNLOGGED TABLE staging.funcionarios_raw (
    excel_row           integer NOT NULL,
    rejected            boolean NOT NULL,
    key_repeated        boolean NOT NULL,
    duplicate_of        integer,
    funcionario_id      integer,
    funcionario_nome    text,
    funcionario_activo  smallint
);

-- sheet FuncionariosFasesAptos
CREATE UNLOGGED TABLE staging.funcionarios_fases_aptos_raw (
    excel_row                        integer NOT NULL,
    rejected                         boolean NOT NULL,
    key_repeated                     boolean NOT NULL,
    duplicate_of                     integer,
    funcionario_fase_funcionario_id  integer,
    funcionario_fase_fase_id         integer,
    funcionario_fase_inicio          timestamp without time zone
);

-- sheet Fases
CREATE UNLOGGED TABLE staging.fases_catalogo_raw (
    excel_row         integer NOT NULL,
    rejected          boolean NOT NULL,
    key_repeated      boolean NOT NULL,
    duplicate_of      integer,
    fase_id           integer,
    fase_nome         text,
    fase_sequencia    integer,
    fase_de_producao  smallint,
    fase_automatica   smallint
);

-- sheet Modelos
CREATE UNLOGGED TABLE staging.modelos_raw (
    excel_row                integer NOT NULL,
    rejected                 boolean NOT NULL,
    key_repeated             boolean NOT NULL,
    duplicate_of             integer,
    produto_id               integer,
    produto_nome             text,
    produto_peso_desmolde    numeric,
    produto_peso_acabamento  numeric,
    produto_qtd_gel_deck     numeric,
    produto_qtd_gel_casco    numeric
);

-- sheet FasesStandardModelos
CREATE UNLOGGED TABLE staging.fases_standard_modelos_raw (
    excel_row                   integer NOT NULL,
    rejected                    boolean NOT NULL,
    key_repeated                boolean NOT NULL,
    duplicate_of                integer,
    produto_fase_produto_id     integer,
    produto_fase_fase_id        integer,
    produto_fase_sequencia      integer,
    produto_fase_coeficiente    numeric,
    produto_fase_coeficiente_x  numeric
);
