"""Data expectations on the core tables, run by Great Expectations 1.x inside PostgreSQL.

Each table's suite is data: rules generated from the contract (keys unique and not null,
required columns not null, domains such as 0/1 flags and severity 1-3) plus a short explicit
list of plausibility rules (value ranges, the share of phases that end after they start).
``run_expectations`` validates one table through a GX SQL datasource, so every figure is an
aggregate query in PostgreSQL; no table is ever loaded into pandas.

Great Expectations is imported inside the functions that need it: it takes ~2-4 s to import,
and loading the Dagster code location must not pay for it.
"""

# Deferred imports: Great Expectations (~2.5 s to import) loads only where a suite is validated;
# the specs, the store and the reports need none of it.

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prodplan_pipeline.contract import Sheet
from prodplan_pipeline.warehouse.connection import fetch_dicts

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# --- Plausibility thresholds -------------------------------------------------------------------

# Share of phase rows with both timestamps whose end is not before their start. The real export
# has ~99.5% (clock corrections around shift changes); below 98% something systematic broke,
# such as swapped columns or a time-zone shift in the export.
MIN_SHARE_FIM_AFTER_INICIO = 0.98
# Standard-hours coefficients are mostly 1-10, but the real export has 96, 133 and 160 for the
# large boats' finishing and infusion phases; 250 keeps those yet catches a scale error such as
# minutes written for hours (an 8 becoming 480).
MAX_COEFFICIENT = 250
# A boat weighs tens of kg at a phase (real maximum ~110 kg, a 24 ft sailboat); 500 kg catches
# grams typed as kilograms. Product weights: real maximum 140 kg.
MAX_PHASE_WEIGHT_KG = 500
MAX_PRODUCT_WEIGHT_KG = 200
# Gelcoat per deck or hull is a few kg (real maximum 8.4); 50 kg catches the same unit errors.
MAX_GELCOAT_KG = 50

# How many unexpected values GX fetches per failed expectation, as examples for the report.
EXAMPLE_VALUES = 3


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation as data: its GX class name, its arguments and a sentence a person reads."""

    table: str  # schema-qualified core table
    kind: str  # class in great_expectations.expectations, e.g. "ExpectColumnValuesToBeInSet"
    kwargs: dict[str, Any] = field(hash=False)
    description: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        k = self.kwargs
        if "column" in k:
            return (k["column"],)
        if "column_list" in k:
            return tuple(k["column_list"])
        return tuple(k[name] for name in ("column_A", "column_B") if name in k)

    @property
    def settings(self) -> str:
        """The arguments other than the columns, e.g. ``min_value=0, max_value=500``."""
        column_args = {"column", "column_list", "column_A", "column_B"}
        return ", ".join(f"{k}={v}" for k, v in self.kwargs.items() if k not in column_args)


def _between(table: str, column: str, low: float, high: float, unit: str = "") -> ExpectationSpec:
    return ExpectationSpec(
        table,
        "ExpectColumnValuesToBeBetween",
        {"column": column, "min_value": low, "max_value": high},
        f"{column} between {low} and {high}{unit}",
    )


FASES, MODELOS, ROUTES = "core.fases_ordem_fabrico", "core.modelos", "core.fases_standard_modelos"

# Rules the contract cannot express; every one names a table and columns of the contract (a
# test checks that).
EXTRA_EXPECTATIONS: tuple[ExpectationSpec, ...] = (
    ExpectationSpec(
        FASES,
        "ExpectColumnPairValuesAToBeGreaterThanB",
        {
            "column_A": "fase_of_fim",
            "column_B": "fase_of_inicio",
            "or_equal": True,
            "ignore_row_if": "either_value_is_missing",
            "mostly": MIN_SHARE_FIM_AFTER_INICIO,
        },
        f"fase_of_fim >= fase_of_inicio in at least {MIN_SHARE_FIM_AFTER_INICIO:.0%} of rows with both",
    ),
    _between(FASES, "fase_of_coeficiente", 0, MAX_COEFFICIENT),
    _between(FASES, "fase_of_coeficiente_x", 0, MAX_COEFFICIENT),
    _between(FASES, "fase_of_peso", 0, MAX_PHASE_WEIGHT_KG, " kg"),
    _between(MODELOS, "produto_peso_desmolde", 0, MAX_PRODUCT_WEIGHT_KG, " kg"),
    _between(MODELOS, "produto_peso_acabamento", 0, MAX_PRODUCT_WEIGHT_KG, " kg"),
    _between(MODELOS, "produto_qtd_gel_deck", 0, MAX_GELCOAT_KG, " kg"),
    _between(MODELOS, "produto_qtd_gel_casco", 0, MAX_GELCOAT_KG, " kg"),
    _between(ROUTES, "produto_fase_coeficiente", 0, MAX_COEFFICIENT),
)


# --- The suite of a table ---------------------------------------------------------------------


def expectation_specs(sheet: Sheet) -> tuple[ExpectationSpec, ...]:
    """The whole suite of ``sheet``'s core table: the key's rules first, then the other
    contract rules, then the extras."""
    table = sheet.core_table
    not_null = [name for name, _, required in sheet.core_columns if required]
    # A key column the contract marks optional (funcionarios_fases_aptos' Inicio) is
    # legitimately NULL, so it gets no not-null rule.
    keys = [name for name in sheet.key_names if name in not_null]
    specs = [ExpectationSpec(table, "ExpectTableRowCountToBeBetween", {"min_value": 1}, "the table is not empty")]
    specs += [_not_null(table, name) for name in keys]
    specs.append(_unique_key(sheet))
    specs += [_not_null(table, name) for name in not_null if name not in keys]
    specs += [_in_set(table, c.name, c.domain) for c in sheet.columns if c.domain]
    specs += [spec for spec in EXTRA_EXPECTATIONS if spec.table == table]
    return tuple(specs)


def _not_null(table: str, column: str) -> ExpectationSpec:
    return ExpectationSpec(table, "ExpectColumnValuesToNotBeNull", {"column": column}, f"{column} is not null")


def _unique_key(sheet: Sheet) -> ExpectationSpec:
    keys = list(sheet.key_names)
    if len(keys) == 1:
        return ExpectationSpec(
            sheet.core_table, "ExpectColumnValuesToBeUnique", {"column": keys[0]}, f"{keys[0]} is unique"
        )
    # GX matches groups with "=", so rows with a NULL key part are not compared; the table's
    # UNIQUE NULLS NOT DISTINCT constraint already covers those.
    return ExpectationSpec(
        sheet.core_table, "ExpectCompoundColumnsToBeUnique", {"column_list": keys}, f"({', '.join(keys)}) is unique"
    )


def _in_set(table: str, column: str, domain: tuple[int, ...]) -> ExpectationSpec:
    # GX skips NULLs in map expectations, so an optional column (shift) may still be NULL.
    values = "{" + ",".join(str(v) for v in domain) + "}"
    return ExpectationSpec(
        table, "ExpectColumnValuesToBeInSet", {"column": column, "value_set": list(domain)}, f"{column} in {values}"
    )


# --- Results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectationResult:
    spec: ExpectationSpec
    success: bool
    observed_value: Any = None  # only aggregate expectations (row count) have one
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: tuple[Any, ...] = ()  # a few unexpected values
    error: str | None = None  # GX could not evaluate the expectation

    @property
    def expectation_type(self) -> str:
        return self.spec.kind

    @property
    def columns(self) -> tuple[str, ...]:
        return self.spec.columns

    @property
    def description(self) -> str:
        return self.spec.description

    def outcome(self) -> str:
        """What was found, in a few words: ``3 unexpected (0.06%), e.g. 7, 9``."""
        if self.error:
            return f"error: {self.error}"
        if self.unexpected_count is None:
            return f"observed {self.observed_value}"
        text = f"{self.unexpected_count} unexpected"
        if self.unexpected_count and self.unexpected_percent is not None:
            text += f" ({self.unexpected_percent:.2f}%)"
        if self.examples:
            text += ", e.g. " + ", ".join(_short(v) for v in self.examples)
        return text


@dataclass
class ExpectationReport:
    table: str
    results: list[ExpectationResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def failed(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    @property
    def unexpected_total(self) -> int:
        return sum(r.unexpected_count or 0 for r in self.results)

    def summary(self) -> str:
        """One line: ``core.x: 14 of 15 expectations met; fase_of_turno in {1,2,3}: 3 unexpected``."""
        met = len(self.results) - len(self.failed)
        line = f"{self.table}: {met} of {len(self.results)} expectations met"
        details = [f"{r.description}: {r.outcome()}" for r in self.failed[:3]]
        if len(self.failed) > 3:
            details.append(f"{len(self.failed) - 3} more")
        return "; ".join([line, *details])

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for an asset check's metadata ("expectations" is a markdown table)."""
        return {
            "expectations": self.markdown(),
            "evaluated_expectations": len(self.results),
            "failed_expectations": len(self.failed),
            "unexpected_total": self.unexpected_total,
            "duration_seconds": round(self.seconds, 2),
        }

    def markdown(self) -> str:
        rows = [
            "| ok | expectation | type | settings | observed | unexpected | unexpected % |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            cells = [
                "✅" if r.success else "❌",
                r.description,
                r.expectation_type,
                r.spec.settings,
                r.error or _cell(r.observed_value),
                _cell(r.unexpected_count),
                "" if r.unexpected_percent is None else f"{r.unexpected_percent:.3f}",
            ]
            rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(rows)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _short(value: Any) -> str:
    """An example value, compactly: a pair of columns as ``(a, b)``, long text cut."""
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return str(value)[:40]


# A table is validated again only when an ingestion changed it since its stored outcome.
CHANGED_SINCE_VALIDATION = """
    SELECT coalesce(sum(r.rows_inserted + r.rows_updated + r.rows_deleted), 0) > 0
           OR NOT EXISTS (SELECT 1 FROM ops.expectation_results WHERE table_name = %(table)s)
    FROM ops.ingestion_sheet_runs r
    WHERE r.sheet = %(sheet)s AND r.status = 'merged'
      AND r.run_id > coalesce((SELECT ingestion_run_id FROM ops.expectation_results
                               WHERE table_name = %(table)s), 0)"""


def needs_validation(conn, sheet: Sheet) -> bool:
    """Whether an ingestion changed ``sheet``'s core table since its last validation (or it
    was never validated): otherwise its stored outcome still describes it."""
    with conn.cursor() as cur:
        cur.execute(CHANGED_SINCE_VALIDATION, {"table": sheet.core_table, "sheet": sheet.name})
        return cur.fetchone()[0]


# --- Running a suite with Great Expectations ------------------------------------------------

STORED_RESULT = """SELECT success, summary, failed_expectations, unexpected_total, details_markdown,
                          evaluated_at, evaluated_expectations, duration_seconds, dagster_run_id
                   FROM ops.expectation_results WHERE table_name = %s"""
STORE_RESULT = """
    INSERT INTO ops.expectation_results AS e (table_name, success, summary, failed_expectations,
        unexpected_total, details_markdown, ingestion_run_id, evaluated_at, evaluated_expectations,
        duration_seconds, dagster_run_id)
    VALUES (%(table)s, %(success)s, %(summary)s, %(failed_expectations)s, %(unexpected_total)s,
            %(expectations)s, (SELECT max(run_id) FROM ops.ingestion_runs), now(),
            %(evaluated_expectations)s, %(duration_seconds)s, %(dagster_run_id)s)
    ON CONFLICT (table_name) DO UPDATE SET success = EXCLUDED.success, summary = EXCLUDED.summary,
        failed_expectations = EXCLUDED.failed_expectations,
        unexpected_total = EXCLUDED.unexpected_total, details_markdown = EXCLUDED.details_markdown,
        ingestion_run_id = EXCLUDED.ingestion_run_id, evaluated_at = EXCLUDED.evaluated_at,
        evaluated_expectations = EXCLUDED.evaluated_expectations,
        duration_seconds = EXCLUDED.duration_seconds, dagster_run_id = EXCLUDED.dagster_run_id"""


def store_result(conn, table: str, report: ExpectationReport, dagster_run_id: str | None = None) -> None:
    """Keep a table's outcome, with the Dagster run that evaluated it: whichever step or process
    reports it next reads it from here (a table no later ingestion changes reports it again)."""
    with conn.cursor() as cur:
        cur.execute(
            STORE_RESULT,
            {
                "table": table,
                "success": report.success,
                "summary": report.summary(),
                "dagster_run_id": dagster_run_id,
                **report.as_metadata(),
            },
        )


def stored_result(conn, table: str) -> dict | None:
    """The table's last outcome, by column name (None: never validated)."""
    with conn.cursor() as cur:
        rows = fetch_dicts(cur, STORED_RESULT, (table,))
    return rows[0] if rows else None


def run_expectations(database_url: str | URL, sheet: Sheet) -> ExpectationReport:
    """Validate ``sheet``'s core table in the database at ``database_url``."""
    started = time.monotonic()
    specs = expectation_specs(sheet)
    with _quiet_gx():
        batch = _table_batch(_connection_string(database_url), sheet.core_table)
        results = _validate(batch, specs, range(len(specs)), examples=0)
        # Fetching example values costs a scan per expectation even when there are none (~40%
        # of the time on the big tables), so examples are fetched only for failed expectations.
        failed = [i for i, r in results.items() if not r.success and r.unexpected_count]
        if failed:
            results.update(_validate(batch, specs, failed, examples=EXAMPLE_VALUES))
    ordered = [results[i] for i in sorted(results)]
    return ExpectationReport(sheet.core_table, ordered, time.monotonic() - started)


def _validate(batch, specs: tuple[ExpectationSpec, ...], chosen, examples: int) -> dict[int, ExpectationResult]:
    """Run the ``chosen`` specs on ``batch``; results by spec index (GX reorders them)."""
    validation = batch.validate(
        _gx_suite(specs, chosen), result_format={"result_format": "BASIC", "partial_unexpected_count": examples}
    )
    by_index = {r.expectation_config.meta["spec"]: r for r in validation.results}
    return {i: _result(specs[i], r) for i, r in by_index.items()}


def _connection_string(database_url: str | URL) -> str:
    """The URL with the psycopg2 driver, rendered so that '$' in a password or a socket path is
    percent-encoded: GX would otherwise read ``${...}`` or ``$x`` as a config variable."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    return url.render_as_string(hide_password=False)


# One GX context and SQL datasource per database URL for the life of the process: the nine
# tables of a run share one SQLAlchemy engine (and its connections) instead of nine.
_DATASOURCES: dict[str, Any] = {}
_DATASOURCES_LOCK = threading.Lock()
WHOLE_TABLE = "whole table"


def _table_batch(connection_string: str, table: str):
    """A batch of the whole table, whose metrics GX computes with SQL in PostgreSQL."""
    datasource = _datasource(connection_string)
    with _DATASOURCES_LOCK:
        try:
            asset = datasource.get_asset(table)
        except LookupError:
            schema, name = table.split(".")
            asset = datasource.add_table_asset(name=table, table_name=name, schema_name=schema)
        try:
            definition = asset.get_batch_definition(WHOLE_TABLE)
        except KeyError:
            definition = asset.add_batch_definition_whole_table(WHOLE_TABLE)
    return definition.get_batch()


def _datasource(connection_string: str):
    with _DATASOURCES_LOCK:
        if connection_string not in _DATASOURCES:
            _DATASOURCES[connection_string] = _new_datasource(connection_string)
        return _DATASOURCES[connection_string]


def _new_datasource(connection_string: str):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    # add_sql, not add_postgres: the latter's URL validation rejects a Unix-socket URL
    # (no host part). A table asset never needs a temporary table; pre-ping keeps a cached
    # engine usable after the server restarts.
    return context.data_sources.add_sql(
        name="warehouse", connection_string=connection_string, create_temp_table=False, kwargs={"pool_pre_ping": True}
    )


def preload(database_url: str | URL) -> None:
    """Import Great Expectations and build the datasource now, in the calling thread (~2.5 s of
    Python). Imports must not run in two threads at once: a thread importing GX while another
    imported SQLAlchemy met a partially initialised module."""
    with _quiet_gx():
        _datasource(_connection_string(database_url))


def import_gx() -> None:
    """Import Great Expectations alone (~2 s of Python), no datasource: for a process that
    validates later and has a core to spare now (the forked quality run, while its parent reads
    the workbook)."""
    with _quiet_gx():
        import great_expectations  # noqa: F401
        import great_expectations.expectations  # noqa: F401


def dispose_datasources() -> None:
    """Close the cached connections (for tests that drop their databases, or a long process)."""
    with _DATASOURCES_LOCK:
        for datasource in _DATASOURCES.values():
            datasource.get_engine().dispose()
        _DATASOURCES.clear()


def _gx_suite(specs: tuple[ExpectationSpec, ...], chosen):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    # meta["spec"] ties each GX result back to its spec.
    expectations = [
        getattr(gxe, specs[i].kind)(**specs[i].kwargs, meta={"spec": i}, description=specs[i].description)
        for i in chosen
    ]
    return gx.ExpectationSuite(name=specs[0].table, expectations=expectations)


def _result(spec: ExpectationSpec, validation) -> ExpectationResult:
    found = validation.result or {}
    return ExpectationResult(
        spec=spec,
        success=bool(validation.success),
        observed_value=found.get("observed_value"),
        unexpected_count=found.get("unexpected_count"),
        unexpected_percent=found.get("unexpected_percent"),
        examples=tuple(found.get("partial_unexpected_list") or ())[:EXAMPLE_VALUES],
        error=_error(validation.exception_info),
    )


def _error(exception_info: dict | None) -> str | None:
    """Why GX could not evaluate an expectation (a missing column, a type error), if it could
    not. GX reports it either flat or per metric, as {metric id: {...}}."""
    info = exception_info or {}
    candidates = [info] if "raised_exception" in info else list(info.values())
    for candidate in candidates:
        if isinstance(candidate, dict) and candidate.get("raised_exception"):
            return " ".join(str(candidate.get("exception_message")).split())[:200]
    return None


@contextlib.contextmanager
def _quiet_gx():
    """GX logs dozens of INFO and DEBUG lines per run (docs registration, type lookups; progress
    bars are switched off per context); keep only its warnings and errors, and drop its advisory
    Python warnings."""
    logger = logging.getLogger("great_expectations")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"great_expectations(\.|$)")
            yield
    finally:
        logger.setLevel(level)


__all__ = [
    "EXTRA_EXPECTATIONS",
    "ExpectationReport",
    "ExpectationResult",
    "ExpectationSpec",
    "dispose_datasources",
    "expectation_specs",
    "import_gx",
    "needs_validation",
    "preload",
    "run_expectations",
]
