"""The workbook contract: the nine sheets of ``Folha_IA.xlsx``, defined once.

Everything that needs to know a header, a column type, a key or a table name reads it from
here: the staging DDL, validation, the merge SQL, the generated documentation and the sample
generator. The SQL schema in ``sql/migrations`` is written by hand (it carries partitioning and
indexes) and a test proves it agrees with this module column by column.

Identifiers in generated SQL come only from this module, never from input.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime

# The plausible-time window. A timestamp outside it is a typing slip, not an event (serial 0 is
# 1899-12-30; 1850-06-01 or 9999-12-31 23:59:59 in a cell): it is kept in core as typed, flagged
# in ops.data_quality_issues (implausible_timestamp:<Sheet>.<Header>) and left out of durations,
# lead times, on-time flags, defect times, WIP ages and so of every aggregate. 1990 is well
# before anything in the real export (its oldest timestamp, an employee's skill, is from 1997;
# its orders start in 2020); 2100 is far past any planned date. Fixed, so that deriving the same
# rows again, on any day, gives the same values.
PLAUSIBLE_FROM, PLAUSIBLE_TO = datetime(1990, 1, 1), datetime(2100, 1, 1)


def plausible(column: str) -> str:
    """SQL: ``column`` is within the plausible-time window (false for NULL)."""
    return f"({column} >= timestamp '{PLAUSIBLE_FROM:%Y-%m-%d}' AND {column} < timestamp '{PLAUSIBLE_TO:%Y-%m-%d}')"


class ColumnType(enum.Enum):
    """A column's logical type, with the PostgreSQL type it is stored as in core."""

    INTEGER = "integer"
    DECIMAL = "numeric"
    TIMESTAMP = "timestamp without time zone"
    TEXT = "text"
    # 0/1 flags and small codes (severity, shift) are smallint; their domains are data
    # expectations (reported), not constraints (which would make a merge fail).
    SMALLINT = "smallint"

    @property
    def sql_type(self) -> str:
        return self.value


# The source system writes an empty value as this text; it means SQL NULL.
NULL_TEXT = "NULL"


def snake_case(header: str) -> str:
    """``Of_DataCriacao`` -> ``of_data_criacao``; ``OFCH_GRAVIDADE`` -> ``ofch_gravidade``."""
    parts = []
    for part in header.split("_"):
        part = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", part)
        part = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", part)
        parts.append(part.lower())
    return "_".join(p for p in parts if p)


@dataclass(frozen=True)
class Column:
    header: str
    type: ColumnType
    required: bool = True
    references: str | None = None  # "Sheet.Header" of the referenced key, if any
    domain: tuple[int, ...] | None = None  # allowed values (checked as expectations)
    description: str = ""

    @property
    def name(self) -> str:
        """The snake_case column name in staging and core."""
        return snake_case(self.header)


@dataclass(frozen=True)
class DerivedColumn:
    """A core-only column computed by the pipeline (not present in the workbook). The merge
    writes it with every row it writes (a committed row never waits for its derived values,
    and a partition key is right when the row lands); the backfill verifies or repairs it."""

    name: str
    sql_type: str
    description: str
    sql: str  # the value, over the row's own columns (and the sheet's derived_joins)
    required: bool = False  # NOT NULL in core


@dataclass(frozen=True)
class Sheet:
    name: str
    table: str  # core table name (without schema)
    columns: tuple[Column, ...]
    key: tuple[str, ...] | None  # headers; None: no source key (surrogate built from the row)
    description: str
    derived: tuple[DerivedColumn, ...] = field(default_factory=tuple)
    # Which day a changed row moves, for the daily aggregates: (the ops.changed_days kind, the
    # core column holding the row's day; None: the merge's own statement, as for the defects,
    # whose day is their inspection phase's time). None: no daily aggregate reads the sheet.
    changed_days: tuple[str, str | None] | None = None
    partition_key: str | None = None  # the core column the table is partitioned by
    # Joins the derived columns read, for the row aliased {row} (other core tables: the merge
    # of the tables joined here runs first in the snapshot's commit).
    derived_joins: str = ""
    # A changed row of this sheet changes the days of other sheets' facts too (an order's
    # product decides which aggregate rows its phases and defects count in).
    moves_dependent_days: bool = False
    # Columns, besides the day, whose old values the merge keeps: they place a row in the phase
    # statistics' (day, product, phase) groups, recorded as changed with the old and new values.
    group_columns: tuple[str, ...] = ()

    @property
    def headers(self) -> tuple[str, ...]:
        return tuple(c.header for c in self.columns)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def key_names(self) -> tuple[str, ...]:
        if self.key is None:
            return SURROGATE_KEY
        return tuple(self.column(h).name for h in self.key)

    @property
    def core_columns(self) -> tuple[tuple[str, str, bool], ...]:
        """(name, SQL type, NOT NULL) of every core column, in table order."""
        surrogate = tuple((name, sql_type, True) for name, sql_type in SURROGATE_KEY_TYPES)
        source = tuple((c.name, c.type.sql_type, c.required) for c in self.columns)
        derived = tuple((d.name, d.sql_type, d.required) for d in self.derived)
        return (surrogate if self.key is None else ()) + source + derived

    @property
    def computed(self) -> dict[str, str]:
        """{derived column: its SQL value}."""
        return {d.name: d.sql for d in self.derived}

    def joins_for(self, row: str) -> str:
        return self.derived_joins.format(row=row)

    @property
    def merges_after(self) -> tuple[str, ...]:
        """The sheets whose merge must come first in the snapshot's one transaction: those whose
        rows this sheet's derived values join (a defect's time: its inspection phase row and its
        order), and those that record the days of this sheet's facts before they change
        (``moves_dependent_days``: the orders, for the phases and the defects)."""
        joined = set(re.findall(r"JOIN (core\.\w+)", self.derived_joins))
        return tuple(
            s.name
            for s in SHEETS
            if s is not self and (s.core_table in joined or (s.moves_dependent_days and self.changed_days is not None))
        )

    @property
    def core_table(self) -> str:
        return f"core.{self.table}"

    @property
    def staging_table(self) -> str:
        return f"staging.{self.table}_raw"

    def column(self, header: str) -> Column:
        for c in self.columns:
            if c.header == header:
                return c
        raise KeyError(f"{self.name} has no column {header!r}")


# Core columns of a sheet without a source key: a fingerprint of the row's values and the
# occurrence number among identical rows, so genuine repeated rows all land and re-ingesting
# the same rows is idempotent.
SURROGATE_KEY_TYPES = (("row_fingerprint", "text"), ("occurrence", "integer"))
SURROGATE_KEY = tuple(name for name, _ in SURROGATE_KEY_TYPES)

# Staging tables carry, before the contract's columns, the Excel row number (1-based, the header
# is row 1), whether the row was rejected by typing, whether its key occurs more than once, and
# (set by the merge) which kept row it duplicates.
EXCEL_ROW = "excel_row"
REJECTED = "rejected"
KEY_REPEATED = "key_repeated"
DUPLICATE_OF = "duplicate_of"

INT, DEC, TS, TXT, SMALL = (
    ColumnType.INTEGER,
    ColumnType.DECIMAL,
    ColumnType.TIMESTAMP,
    ColumnType.TEXT,
    ColumnType.SMALLINT,
)
FLAG = (0, 1)
LEVELS = (1, 2, 3)

ORDENS_FABRICO = Sheet(
    name="OrdensFabrico",
    table="ordens_fabrico",
    changed_days=("order_finish", "of_data_acabamento"),
    moves_dependent_days=True,
    group_columns=("of_produto_id",),
    description="Manufacturing orders: one row per order.",
    key=("Of_Id",),
    columns=(
        Column("Of_Id", INT),
        Column("Of_DataCriacao", TS, description="created"),
        Column("Of_DataAcabamento", TS, required=False, description="finished; NULL = open"),
        Column("Of_ProdutoId", INT, references="Modelos.Produto_Id"),
        Column("Of_FaseId", INT, references="Fases.Fase_Id", description="current phase"),
        Column("Of_DataTransporte", TS, required=False, description="shipping (due) date"),
    ),
    derived=(
        DerivedColumn(
            "lead_time_seconds",
            "double precision",
            "finish - creation, when finished after created (both plausible), else NULL",
            f"CASE WHEN of_data_acabamento >= of_data_criacao AND {plausible('of_data_criacao')} "
            f"AND {plausible('of_data_acabamento')} THEN extract(epoch FROM "
            "of_data_acabamento - of_data_criacao)::double precision END",
        ),
        DerivedColumn(
            "is_on_time",
            "boolean",
            "finished by the end of the shipping (due) day",
            f"CASE WHEN {plausible('of_data_acabamento')} AND {plausible('of_data_transporte')} "
            "THEN of_data_acabamento < date_trunc('day', of_data_transporte) + interval '1 day' END",
        ),
    ),
)

FASES_ORDEM_FABRICO = Sheet(
    name="FasesOrdemFabrico",
    table="fases_ordem_fabrico",
    changed_days=("phase_event", "event_time"),
    partition_key="event_time",  # monthly partitions (sql/migrations/003)
    group_columns=("fase_of_of_id", "fase_of_fase_id"),
    description="Order phases: one row per pass of an order through a phase.",
    key=("FaseOf_Id",),
    columns=(
        Column("FaseOf_Id", INT),
        Column("FaseOf_OfId", INT, references="OrdensFabrico.Of_Id"),
        Column("FaseOf_Inicio", TS, description="started"),
        Column("FaseOf_Fim", TS, required=False, description="ended; NULL = still open"),
        Column("FaseOf_DataPrevista", TS, required=False, description="planned date"),
        Column("FaseOf_Coeficiente", DEC, description="standard-hours weight"),
        Column("FaseOf_CoeficienteX", DEC),
        Column("FaseOf_FaseId", INT, references="Fases.Fase_Id"),
        Column("FaseOf_Peso", DEC, description="kg"),
        Column("FaseOf_Retorno", SMALL, domain=FLAG, description="1 = rework pass"),
        Column("FaseOf_Turno", SMALL, required=False, domain=LEVELS, description="shift"),
        Column("FaseOf_Sequencia", INT),
    ),
    derived=(
        DerivedColumn(
            "event_time",
            "timestamp without time zone",
            "coalesce(fim, inicio): the partition key, set by the merge",
            "coalesce(fase_of_fim, fase_of_inicio)",
            required=True,
        ),
        DerivedColumn(
            "duration_seconds",
            "double precision",
            "fim - inicio when fim >= inicio (both plausible), else NULL",
            f"CASE WHEN fase_of_fim >= fase_of_inicio AND {plausible('fase_of_inicio')} "
            f"AND {plausible('fase_of_fim')} "
            "THEN extract(epoch FROM fase_of_fim - fase_of_inicio)::double precision END",
        ),
        DerivedColumn("is_open", "boolean", "fim is NULL", "fase_of_fim IS NULL"),
        DerivedColumn("is_done", "boolean", "not is_open", "fase_of_fim IS NOT NULL"),
    ),
)

FUNCIONARIOS_FASE_ORDEM_FABRICO = Sheet(
    name="FuncionariosFaseOrdemFabrico",
    table="funcionarios_fase_ordem_fabrico",
    description="Who worked an order phase: one row per (phase row, employee).",
    key=("FuncionarioFaseOf_FaseOfId", "FuncionarioFaseOf_FuncionarioId"),
    columns=(
        Column("FuncionarioFaseOf_FaseOfId", INT, references="FasesOrdemFabrico.FaseOf_Id"),
        Column("FuncionarioFaseOf_FuncionarioId", INT, references="Funcionarios.Funcionario_Id"),
        Column("FuncionarioFaseOf_Chefe", SMALL, domain=FLAG, description="1 = team lead"),
    ),
)

ORDEM_FABRICO_ERROS = Sheet(
    name="OrdemFabricoErros",
    table="erros_ordem_fabrico",
    changed_days=("defect", None),
    description="Quality defects found at inspection. No source key: identical rows are "
    "genuine repeated defects and all of them are kept.",
    key=None,
    columns=(
        Column("Erro_Descricao", TXT, description="defect name"),
        Column("Erro_OfId", INT, references="OrdensFabrico.Of_Id"),
        Column("Erro_FaseAvaliacao", INT, references="Fases.Fase_Id", description="inspection phase"),
        Column("OFCH_GRAVIDADE", SMALL, domain=LEVELS, description="severity"),
        Column("Erro_FaseOfAvaliacao", INT, references="FasesOrdemFabrico.FaseOf_Id"),
        Column("Erro_FaseOfCulpada", INT, required=False, references="FasesOrdemFabrico.FaseOf_Id"),
    ),
    derived=(
        # A defect happened when its inspection phase row happened; without that row, when its
        # order finished, else when the order was created; NULL only when the order is unknown.
        DerivedColumn(
            "ofch_event_time",
            "timestamp without time zone",
            "the inspection phase row's event time, else the order's finish, else its creation; "
            "NULL only for defects of orders missing from OrdensFabrico",
            f"coalesce(CASE WHEN {plausible('i.event_time')} THEN i.event_time END, "
            f"CASE WHEN {plausible('o.of_data_acabamento')} THEN o.of_data_acabamento END, "
            f"CASE WHEN {plausible('o.of_data_criacao')} THEN o.of_data_criacao END)",
        ),
    ),
    # fase_of_id is unique in core (the merge keeps it so across partitions).
    derived_joins="LEFT JOIN core.fases_ordem_fabrico i ON i.fase_of_id = {row}.erro_fase_of_avaliacao "
    "LEFT JOIN core.ordens_fabrico o ON o.of_id = {row}.erro_of_id",
)

FUNCIONARIOS = Sheet(
    name="Funcionarios",
    table="funcionarios",
    description="Employees. The export repeats each employee row; copies are collapsed.",
    key=("Funcionario_Id",),
    columns=(
        Column("Funcionario_Id", INT),
        Column("Funcionario_Nome", TXT, description="a 'z) ' prefix marks former staff"),
        Column("Funcionario_Activo", SMALL, domain=FLAG),
    ),
)

FUNCIONARIOS_FASES_APTOS = Sheet(
    name="FuncionariosFasesAptos",
    table="funcionarios_fases_aptos",
    description="Employee skills: which phases an employee may work, since when.",
    key=("FuncionarioFase_FuncionarioId", "FuncionarioFase_FaseId", "FuncionarioFase_Inicio"),
    columns=(
        Column("FuncionarioFase_FuncionarioId", INT, references="Funcionarios.Funcionario_Id"),
        Column("FuncionarioFase_FaseId", INT, references="Fases.Fase_Id"),
        # Part of the key and legitimately NULL in a few rows (unique NULLS NOT DISTINCT).
        Column("FuncionarioFase_Inicio", TS, required=False),
    ),
)

FASES = Sheet(
    name="Fases",
    table="fases_catalogo",
    description="The phase catalogue.",
    key=("Fase_Id",),
    columns=(
        Column("Fase_Id", INT),
        Column("Fase_Nome", TXT),
        Column("Fase_Sequencia", INT),
        Column("Fase_DeProducao", SMALL, domain=FLAG),
        Column("Fase_Automatica", SMALL, domain=FLAG),
    ),
)

MODELOS = Sheet(
    name="Modelos",
    table="modelos",
    description="Products (kayak models) with their weights and gelcoat quantities.",
    key=("Produto_Id",),
    columns=(
        Column("Produto_Id", INT),
        Column("Produto_Nome", TXT),
        # Measures may be unknown for a model; a missing one does not invalidate the product.
        Column("Produto_PesoDesmolde", DEC, required=False, description="kg"),
        Column("Produto_PesoAcabamento", DEC, required=False, description="kg"),
        Column("Produto_QtdGelDeck", DEC, required=False, description="gelcoat kg, deck"),
        Column("Produto_QtdGelCasco", DEC, required=False, description="gelcoat kg, hull"),
    ),
)

FASES_STANDARD_MODELOS = Sheet(
    name="FasesStandardModelos",
    table="fases_standard_modelos",
    description="Standard route per product: its phases in sequence.",
    key=("ProdutoFase_ProdutoId", "ProdutoFase_FaseId", "ProdutoFase_Sequencia"),
    columns=(
        Column("ProdutoFase_ProdutoId", INT, references="Modelos.Produto_Id"),
        Column("ProdutoFase_FaseId", INT, references="Fases.Fase_Id"),
        Column("ProdutoFase_Sequencia", INT),
        Column("ProdutoFase_Coeficiente", DEC),
        Column("ProdutoFase_CoeficienteX", DEC),
    ),
)

# Workbook order, which is also the order the sample generator writes them in.
SHEETS: tuple[Sheet, ...] = (
    ORDENS_FABRICO,
    FASES_ORDEM_FABRICO,
    FUNCIONARIOS_FASE_ORDEM_FABRICO,
    ORDEM_FABRICO_ERROS,
    FUNCIONARIOS,
    FUNCIONARIOS_FASES_APTOS,
    FASES,
    MODELOS,
    FASES_STANDARD_MODELOS,
)

SHEETS_BY_NAME: dict[str, Sheet] = {s.name: s for s in SHEETS}


def sheet(name: str) -> Sheet:
    try:
        return SHEETS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no sheet {name!r} in the contract; sheets: {', '.join(SHEETS_BY_NAME)}") from None
