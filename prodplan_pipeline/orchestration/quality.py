"""Derived columns, orphan reconciliation, feature gates, data expectations and the data
dictionary: the assets and checks that run after the core tables are merged and reconciled."""

# No `from __future__ import annotations`: Dagster inspects the context annotations.
import functools
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Config,
    MaterializeResult,
    MetadataValue,
    multi_asset,
    multi_asset_check,
)

from prodplan_pipeline import watermarks
from prodplan_pipeline.contract import SHEETS, sheet
from prodplan_pipeline.derived.backfill import backfill_defects, backfill_orders, backfill_phases
from prodplan_pipeline.derived.orphans import ISSUES, refresh_issues, stored_issue_counts
from prodplan_pipeline.derived.orphans import WATERMARK as ISSUES_WATERMARK
from prodplan_pipeline.orchestration.ingestion import OWNERS, core_key, progress, say
from prodplan_pipeline.orchestration.resources import SettingsResource, WarehouseResource
from prodplan_pipeline.orchestration.table_metadata import (
    ROW_COUNT,
    count_rows,
    derived_schema,
    share,
    table_definition,
)
from prodplan_pipeline.quality.dictionary import REPORT_NAME as DICTIONARY_NAME
from prodplan_pipeline.quality.dictionary import write_dictionary
from prodplan_pipeline.quality.expectations import (
    expectation_specs,
    needs_validation,
    preload,
    run_expectations,
    store_result,
    stored_result,
)
from prodplan_pipeline.quality.gates import (
    GATES,
    SUPPORTED,
    refresh_gates,
    stored_gates,
    write_gates_report,
)
from prodplan_pipeline.quality.gates import WATERMARK as GATES_WATERMARK
from prodplan_pipeline.warehouse.cache_version import bump_cache_version

PHASES, ORDERS, DEFECTS = (sheet("FasesOrdemFabrico"), sheet("OrdensFabrico"), sheet("OrdemFabricoErros"))
DERIVED_PHASES = AssetKey(["derived", "fases_ordem_fabrico"])
DERIVED_ORDERS = AssetKey(["derived", "ordens_fabrico"])
DERIVED_DEFECTS = AssetKey(["derived", "erros_ordem_fabrico"])
DATA_QUALITY_ISSUES = AssetKey(["derived", "data_quality_issues"])
FEATURE_GATES = AssetKey(["quality", "feature_gates"])
DATA_DICTIONARY = AssetKey(["quality", "data_dictionary"])
ALL_CORE = [core_key(s) for s in SHEETS]
EXPECTATIONS = "data_expectations"


def gate_check_name(feature: str) -> str:
    return f"gate_{feature}"


def _derived_definition(s) -> dict:
    # The derived assets live in the core tables: same table name, only the computed columns.
    return table_definition(s.core_table, derived_schema(s))


class BackfillConfig(Config):
    full: bool = False  # recompute every row, not only the rows the last merges wrote


def _derived_spec(key: AssetKey, s, reads: list[AssetKey], note: str = "") -> AssetSpec:
    """A derived asset, described from the contract's derived columns of ``s``."""
    columns = "; ".join(f"{d.name}: {d.description}" for d in s.derived)
    return AssetSpec(
        key,
        deps=[core_key(s), *reads],
        group_name="derived",
        kinds={"postgres"},
        owners=OWNERS,
        skippable=True,
        metadata=_derived_definition(s),
        description=f"{s.core_table}'s derived columns ({columns}). Written by the merge with "
        f"every row, verified (and repaired) here.{note}",
    )


# Each derived asset waits for its core table and for the tables its values read.
DERIVED_SPECS = [
    _derived_spec(DERIVED_PHASES, PHASES, [], " Incremental: only rows the merge wrote, unless run with full=true."),
    _derived_spec(DERIVED_ORDERS, ORDERS, []),
    _derived_spec(DERIVED_DEFECTS, DEFECTS, [DERIVED_PHASES, core_key(ORDERS)]),
]
REPORT_SPECS = [
    AssetSpec(
        DATA_QUALITY_ISSUES,
        deps=ALL_CORE + [DERIVED_PHASES],
        group_name="derived",
        kinds={"postgres"},
        owners=OWNERS,
        skippable=True,
        metadata=table_definition("ops.data_quality_issues"),
        description="ops.data_quality_issues: rows kept but flagged (orders of unknown products, "
        "phases and defects of unknown orders, references to unknown phase rows or "
        "employees, orders finishing before creation, phases ending before they start); "
        "each kind looked for again when an ingestion changed one of its tables.",
    ),
    AssetSpec(
        FEATURE_GATES,
        deps=ALL_CORE,
        group_name="quality",
        kinds={"postgres"},
        owners=OWNERS,
        skippable=True,
        metadata=table_definition("ops.feature_gates"),
        description="ops.feature_gates and FEATURE_GATES.md: each feature's relationship match "
        "rate over distinct key values, against its threshold; below it the feature "
        "answers NOT_SUPPORTED_BY_DATA.",
    ),
    AssetSpec(
        DATA_DICTIONARY,
        deps=ALL_CORE + [DERIVED_PHASES, DERIVED_ORDERS, DERIVED_DEFECTS],
        group_name="quality",
        kinds={"postgres"},
        owners=OWNERS,
        skippable=True,
        description="DATA_DICTIONARY.md: every core table and column from the contract (Excel "
        "header, type, meaning, references, allowed values) with live rows, NULL "
        "rates, distinct counts, min/max.",
    ),
]
GATE_CHECKS = [
    AssetCheckSpec(
        gate_check_name(g.feature),
        asset=FEATURE_GATES,
        description=f"{g.feature}: {g.relationship} matches for at least the "
        "threshold share of distinct values (WARN: a gate switches a feature "
        "off, it does not fail the run)",
    )
    for g in GATES
]


@multi_asset(
    specs=[*DERIVED_SPECS, *REPORT_SPECS], check_specs=GATE_CHECKS, can_subset=True, name="derived_and_quality"
)
def derived_and_quality(
    context: AssetExecutionContext, config: BackfillConfig, warehouse: WarehouseResource, settings: SettingsResource
):
    """The derived columns, then the data-quality issues, the feature gates and the data
    dictionary side by side: independent scans of the merged core tables, each on its own
    connection, so PostgreSQL works on both cores (one step after another took ~2x as long)."""
    wh = warehouse.get_warehouse()
    selected = context.selected_asset_keys
    yield from _derived_columns(context, config, wh)  # the issues and the dictionary read them
    reports = settings.get().reports
    parts = [
        part
        for key, part in (
            (DATA_QUALITY_ISSUES, _data_quality_issues),
            (FEATURE_GATES, functools.partial(_feature_gates, reports=reports)),
            (DATA_DICTIONARY, functools.partial(_data_dictionary, reports=reports)),
        )
        if key in selected
    ]
    to_validate = _changed_since_validation(wh) if _expectations_follow(context) else []
    with ThreadPoolExecutor(max_workers=len(parts) + 1, thread_name_prefix="quality") as pool:
        futures = [pool.submit(part, wh) for part in parts]
        if to_validate:  # validated here, reported by core_expectations
            # GX is imported in this thread while the scans above wait on PostgreSQL (~2.5 s
            # that held them back when it came first). Only this thread imports: the scans
            # use modules loaded already (two threads importing at once met a partially
            # initialised SQLAlchemy module).
            preload(wh.url)
            futures.append(pool.submit(_validate, context.run.run_id, to_validate, wh))
        for done in as_completed(futures):
            lines, results = done.result()
            for line in lines:  # logged from the step's own thread
                say(context, line)
            yield from results


def _expectations_follow(context) -> bool:
    """Whether this run's selection includes the expectation checks (the ingestion job does)."""
    selection = context.run.asset_check_selection
    return selection is None or any(key.name == EXPECTATIONS for key in selection)


def _derived_columns(context, config: BackfillConfig, wh):
    """Backfill the derived columns in PostgreSQL, writing only rows whose values change."""
    jobs = {
        DERIVED_PHASES: lambda c: backfill_phases(c, full=config.full),
        DERIVED_ORDERS: backfill_orders,
        DERIVED_DEFECTS: backfill_defects,
    }
    for key, job in jobs.items():
        if key not in context.selected_asset_keys:
            continue
        with wh.connect() as conn:
            report = job(conn)
            if report.rows_written:  # derived values changed: cached answers are stale
                bump_cache_version(conn)
            rows = count_rows(conn, report.table)
        say(context, f"{report.table}: {report.rows_written:,} rows written ({report.seconds:.2f} s)")
        yield MaterializeResult(
            asset_key=key,
            metadata={
                ROW_COUNT: rows,
                "rows_written": report.rows_written,
                "seconds": round(report.seconds, 3),
                **report.counts,
            },
        )


def _data_quality_issues(wh) -> tuple[list[str], list]:
    """ops.data_quality_issues: each kind looked for again when an ingestion changed one of its
    tables, the others kept."""
    with wh.connect() as conn:
        done, change = watermarks.caught_up(conn, ISSUES_WATERMARK)
        if done:  # no ingestion changed core since: the issues are what they were
            counts = stored_issue_counts(conn)
            return [], [
                MaterializeResult(
                    asset_key=DATA_QUALITY_ISSUES,
                    metadata={
                        ROW_COUNT: sum(counts.values()),
                        "total": sum(counts.values()),
                        **counts,
                        "unchanged_since_run": change,
                    },
                )
            ]
        counts, looked_for = refresh_issues(conn, change)  # the table holds every kind: its size is the sum
        watermarks.advance(conn, ISSUES_WATERMARK, change)
    table = ["| issue | count | what |", "|---|---:|---|"] + [
        f"| {i.code} | {counts[i.code]:,} | {i.description} |" for i in ISSUES
    ]
    line = (
        f"data-quality issues: {sum(counts.values()):,} in {sum(1 for n in counts.values() if n)} kinds "
        f"({len(looked_for)} of {len(ISSUES)} kinds looked for again: their tables changed)"
    )
    return [line], [
        MaterializeResult(
            asset_key=DATA_QUALITY_ISSUES,
            metadata={
                ROW_COUNT: sum(counts.values()),
                "total": sum(counts.values()),
                **counts,
                "kinds_looked_for_again": len(looked_for),
                "summary": MetadataValue.md("\n".join(table)),
            },
        )
    ]


def _feature_gates(wh, reports: Path) -> tuple[list[str], list]:
    """The gates and FEATURE_GATES.md; a gate is measured again only when an ingestion changed
    one of its two tables."""
    with wh.connect() as conn:
        done, change = watermarks.caught_up(conn, GATES_WATERMARK)
        results, measured = (stored_gates(conn), []) if done else refresh_gates(conn, change)
        if measured:  # the API answers gated endpoints from these rows: its caches must see them
            bump_cache_version(conn)
        watermarks.advance(conn, GATES_WATERMARK, change)
        rows = count_rows(conn, "ops.feature_gates")
    report = write_gates_report(results, reports)
    events = [
        MaterializeResult(
            asset_key=FEATURE_GATES, metadata={ROW_COUNT: rows, "report": str(report), **_gate_metadata(results)}
        )
    ]
    events += [
        AssetCheckResult(
            asset_key=FEATURE_GATES,
            check_name=gate_check_name(r.gate.feature),
            passed=r.status == SUPPORTED,
            severity=AssetCheckSeverity.WARN,
            description=r.reason,
            metadata={
                "match_rate": r.match_rate if r.match_rate is not None else -1.0,
                "numerator": r.numerator,
                "denominator": r.denominator,
                "threshold": r.threshold,
                "status": r.status,
                "relationship": r.gate.relationship,
            },
        )
        for r in results
    ]
    return [f"gate {r.gate.feature}: {r.status}: {r.reason}" for r in results], events


def _gate_metadata(results) -> dict:
    """Each gate's verdict as text and its match rate as a plottable number (none while there is
    nothing to measure: a made-up rate would be plotted as if measured)."""
    metadata = {
        r.gate.feature: f"{r.status} ({r.match_rate:.4f})" if r.match_rate is not None else r.status for r in results
    }
    metadata.update({f"match_rate_{r.gate.feature}": r.match_rate for r in results if r.match_rate is not None})
    metadata["gates_supported"] = sum(r.status == SUPPORTED for r in results)
    return metadata


def _data_dictionary(wh, reports: Path) -> tuple[list[str], list]:
    """DATA_DICTIONARY.md, rewritten when an ingestion changed core (or the file is gone)."""
    with wh.connect() as conn:
        done, change = watermarks.caught_up(conn, "data_dictionary")
        if done and (reports / DICTIONARY_NAME).exists():
            return [], [
                MaterializeResult(
                    asset_key=DATA_DICTIONARY,
                    metadata={"path": str(reports / DICTIONARY_NAME), "unchanged_since_run": change},
                )
            ]
        path = write_dictionary(conn, reports)
        watermarks.advance(conn, "data_dictionary", change)
    return [], [MaterializeResult(asset_key=DATA_DICTIONARY, metadata={"path": str(path)})]


quality_assets = [derived_and_quality]


@multi_asset_check(
    specs=[
        AssetCheckSpec(
            EXPECTATIONS,
            asset=core_key(s),
            additional_deps=[DERIVED_DEFECTS],
            description=(
                f"Great Expectations suite for {s.core_table}, computed in PostgreSQL: keys not null and "
                "unique, required columns not null, domains (flags 0/1, severity and shift 1-3), the share "
                "of phases ending after they start, value ranges of weights and coefficients."
            ),
        )
        for s in SHEETS
    ],
    can_subset=True,
    name="core_expectations",
)
def core_expectations(context: AssetCheckExecutionContext, warehouse: WarehouseResource):
    """Report each core table's expectation outcome from ops.expectation_results: evaluated by
    this run (its quality step, or here when an ingestion changed the table since its last
    validation and no step of this run validated it), else carried over from the run that did."""
    wh = warehouse.get_warehouse()
    for s in SHEETS:
        if AssetCheckKey(core_key(s), EXPECTATIONS) not in context.selected_asset_check_keys:
            continue
        with wh.connect() as conn:
            changed = needs_validation(conn, s)
        if changed:
            _validate_and_store(wh, s, context.run.run_id)
        yield _reported(wh, s, context.run.run_id)


def _changed_since_validation(wh) -> list:
    """The sheets whose core table an ingestion changed since its last validation."""
    with wh.connect() as conn:
        return [s for s in SHEETS if needs_validation(conn, s)]


def _validate(run_id: str, sheets: list, wh) -> tuple[list[str], list]:
    """Validate ``sheets``' core tables and store the outcomes, for core_expectations to report."""
    for s in sheets:
        _validate_and_store(wh, s, run_id)
    return [], []


def _validate_and_store(wh, s, run_id: str) -> None:
    report = run_expectations(wh.url, s)
    with wh.connect() as conn:
        store_result(conn, s.core_table, report, run_id)
    progress.info(report.summary())


def _reported(wh, s, run_id: str) -> AssetCheckResult:
    """The table's stored outcome as this run's check result."""
    with wh.connect() as conn:
        stored = stored_result(conn, s.core_table)
    # NULL in outcomes stored before migration 012: the suite's size now
    evaluated = stored["evaluated_expectations"] or len(expectation_specs(s))
    now = stored["dagster_run_id"] == run_id
    description = (
        stored["summary"]
        if now
        else f"{stored['summary']} (unchanged since validated {stored['evaluated_at']:%Y-%m-%d %H:%M})"
    )
    metadata = {
        "failed_expectations": stored["failed_expectations"],
        "unexpected_total": stored["unexpected_total"],
        "expectations": MetadataValue.md(stored["details_markdown"]),
        **_met(evaluated, stored["failed_expectations"]),
        "evaluated": "now" if now else f"carried over from {stored['evaluated_at'].isoformat()}",
    }
    if stored["duration_seconds"] is not None:
        metadata["duration_seconds"] = round(stored["duration_seconds"], 2)
    return AssetCheckResult(
        asset_key=core_key(s),
        check_name=EXPECTATIONS,
        passed=stored["success"],
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


def _met(evaluated: int, failed: int) -> dict:
    return {
        "evaluated_expectations": evaluated,
        "expectations_met": evaluated - failed,
        "expectations_met_share": share(evaluated - failed, evaluated),
    }


quality_checks = [core_expectations]

# What `prodplan ingest` runs in a run of its own beside the analytics refresh, so that their
# ~4 s no longer wait in line before it: reports and WARN checks that no aggregate reads. The
# API's gated answers read the gates: ops.snapshot_labels waits for their watermark as for every
# analytics layer's (migration 013), so no answer is labelled with a snapshot whose gates it lacks.
# The ingestion job of the sensors and the UI still runs everything in one run.
BESIDE_ANALYTICS_ASSETS = frozenset({DATA_QUALITY_ISSUES, FEATURE_GATES, DATA_DICTIONARY})
BESIDE_ANALYTICS_CHECKS = frozenset(
    {AssetCheckKey(FEATURE_GATES, gate_check_name(g.feature)) for g in GATES}
    | {AssetCheckKey(core_key(s), EXPECTATIONS) for s in SHEETS}
)
