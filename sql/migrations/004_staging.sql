-- GENERATED from prodplan_pipeline/contract.py by prodplan_pipeline.warehouse.ddl: do not edit.
-- Landing tables: every cell as text, as read from the workbook, with its Excel row number.
-- UNLOGGED because they are rebuilt from the workbook on every run (no WAL, faster COPY).

-- sheet OrdensFabrico
CREATE UNLOGGED TABLE staging.ordens_fabrico_raw (
    excel_row           integer NOT NULL,
    of_id               text,
    of_data_criacao     text,
    of_data_acabamento  text,
    of_produto_id       text,
    of_fase_id          text,
    of_data_transporte  text
);

-- sheet FasesOrdemFabrico
CREATE UNLOGGED TABLE staging.fases_ordem_fabrico_raw (
    excel_row              integer NOT NULL,
    fase_of_id             text,
    fase_of_of_id          text,
    fase_of_inicio         text,
    fase_of_fim            text,
    fase_of_data_prevista  text,
    fase_of_coeficiente    text,
    fase_of_coeficiente_x  text,
    fase_of_fase_id        text,
    fase_of_peso           text,
    fase_of_retorno        text,
    fase_of_turno          text,
    fase_of_sequencia      text
);

-- sheet FuncionariosFaseOrdemFabrico
CREATE UNLOGGED TABLE staging.funcionarios_fase_ordem_fabrico_raw (
    excel_row                           integer NOT NULL,
    funcionario_fase_of_fase_of_id      text,
    funcionario_fase_of_funcionario_id  text,
    funcionario_fase_of_chefe           text
);

-- sheet OrdemFabricoErros
CREATE UNLOGGED TABLE staging.erros_ordem_fabrico_raw (
    excel_row               integer NOT NULL,
    erro_descricao          text,
    erro_of_id              text,
    erro_fase_avaliacao     text,
    ofch_gravidade          text,
    erro_fase_of_avaliacao  text,
    erro_fase_of_culpada    text
);

-- sheet Funcionarios
CREATE UNLOGGED TABLE staging.funcionarios_raw (
    excel_row           integer NOT NULL,
    funcionario_id      text,
    funcionario_nome    text,
    funcionario_activo  text
);

-- sheet FuncionariosFasesAptos
CREATE UNLOGGED TABLE staging.funcionarios_fases_aptos_raw (
    excel_row                        integer NOT NULL,
    funcionario_fase_funcionario_id  text,
    funcionario_fase_fase_id         text,
    funcionario_fase_inicio          text
);

-- sheet Fases
CREATE UNLOGGED TABLE staging.fases_catalogo_raw (
    excel_row         integer NOT NULL,
    fase_id           text,
    fase_nome         text,
    fase_sequencia    text,
    fase_de_producao  text,
    fase_automatica   text
);

-- sheet Modelos
CREATE UNLOGGED TABLE staging.modelos_raw (
    excel_row                integer NOT NULL,
    produto_id               text,
    produto_nome             text,
    produto_peso_desmolde    text,
    produto_peso_acabamento  text,
    produto_qtd_gel_deck     text,
    produto_qtd_gel_casco    text
);

-- sheet FasesStandardModelos
CREATE UNLOGGED TABLE staging.fases_standard_modelos_raw (
    excel_row                   integer NOT NULL,
    produto_fase_produto_id     text,
    produto_fase_fase_id        text,
    produto_fase_sequencia      text,
    produto_fase_coeficiente    text,
    produto_fase_coeficiente_x  text
);
