"""Feature gates: a feature the data cannot support switches itself off.

Each gate measures one relationship as a match rate over *distinct* key values (how many of the
distinct referencing values exist as keys of the referenced table). Below the threshold the
feature answers NOT_SUPPORTED_BY_DATA, with the measured rate and a reason a person can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prodplan_pipeline import watermarks
from prodplan_pipeline.contract import sheet

DEFAULT_THRESHOLD = 0.90
SUPPORTED, NOT_SUPPORTED = "SUPPORTED", "NOT_SUPPORTED_BY_DATA"
REPORT_NAME = "FEATURE_GATES.md"
WATERMARK = "feature_gates"  # the gates as a whole; each gate has its own beside it


@dataclass(frozen=True)
class Gate:
    """A feature and the contract reference it depends on; the tables and columns measured
    come from the contract, so a gate cannot drift from the schema."""

    feature: str
    reference: str  # "Sheet.Header" of the referencing column, as the contract declares it
    meaning: str  # what the feature gives a user

    @property
    def _columns(self) -> tuple:
        sheet_name, header = self.reference.split(".")
        child_sheet = sheet(sheet_name)
        column = child_sheet.column(header)
        parent_name, parent_header = column.references.split(".")
        parent_sheet = sheet(parent_name)
        return child_sheet, column, parent_sheet, parent_sheet.column(parent_header)

    @property
    def relationship(self) -> str:  # as the workbook names it
        _, column, _, parent = self._columns
        return f"{column.header} → {parent.header}"

    @property
    def child(self) -> str:  # table.column holding the reference
        child_sheet, column, _, _ = self._columns
        return f"{child_sheet.core_table}.{column.name}"

    @property
    def parent(self) -> str:  # table.column it should match
        _, _, parent_sheet, parent = self._columns
        return f"{parent_sheet.core_table}.{parent.name}"

    @property
    def reads(self) -> tuple[str, ...]:  # the core tables it measures: re-measured when one changes
        return (self.child.rsplit(".", 1)[0], self.parent.rsplit(".", 1)[0])

    @property
    def watermark(self) -> str:  # the ops.watermarks entry: the last core change it was measured after
        return f"{WATERMARK}:{self.feature}"


# Each gate a constant, so whatever names one (the API's gated endpoints) names a declared gate.
KPIS_BY_EMPLOYEE = Gate(
    "kpis_by_employee",
    "FuncionariosFaseOrdemFabrico.FuncionarioFaseOf_FaseOfId",
    "productivity per employee (durations of the phase rows each employee worked)",
)
KPIS_BY_PRODUCT_ATTRIBUTES = Gate(
    "kpis_by_product_attributes",
    "OrdensFabrico.Of_ProdutoId",
    "KPIs by product attributes (weights, gelcoat quantities)",
)
QUALITY_BY_PHASE_TIMING = Gate(
    "quality_by_phase_timing",
    "OrdemFabricoErros.Erro_FaseOfAvaliacao",
    "defects placed in time by their inspection phase",
)
QUALITY_BY_ORDER = Gate("quality_by_order", "OrdemFabricoErros.Erro_OfId", "defects per order and product")
PHASES_BY_ORDER = Gate("phases_by_order", "FasesOrdemFabrico.FaseOf_OfId", "phase statistics per order and product")
GATES = (KPIS_BY_EMPLOYEE, KPIS_BY_PRODUCT_ATTRIBUTES, QUALITY_BY_PHASE_TIMING, QUALITY_BY_ORDER, PHASES_BY_ORDER)


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    numerator: int
    denominator: int
    threshold: float

    @property
    def match_rate(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None

    @property
    def status(self) -> str:
        rate = self.match_rate
        return SUPPORTED if rate is not None and rate >= self.threshold else NOT_SUPPORTED

    @property
    def reason(self) -> str:
        g = self.gate
        if self.denominator == 0:
            return f"no {g.relationship.split(' ')[0]} values to measure yet"
        verdict = "at least" if self.status == SUPPORTED else "below"
        return (
            f"{self.numerator:,} of {self.denominator:,} distinct {g.relationship.split(' ')[0]} "
            f"values ({self.match_rate:.1%}) exist as {g.relationship.split(' ')[-1]}: {verdict} "
            f"the {self.threshold:.0%} needed for {g.meaning}"
        )


def _split(qualified: str) -> tuple[str, str]:
    table, column = qualified.rsplit(".", 1)
    return table, column


def measure(conn, gate: Gate, threshold: float = DEFAULT_THRESHOLD) -> GateResult:
    child_table, child = _split(gate.child)
    parent_table, parent = _split(gate.parent)
    with conn.cursor() as cur:
        # Two distinct sets joined by hash: a per-value EXISTS would probe every monthly
        # partition of the phases table for each of ~360k values (~20 s at full size).
        cur.execute(f"""
            SELECT count(p.v), count(*)
            FROM (SELECT DISTINCT {child} AS v FROM {child_table} WHERE {child} IS NOT NULL) d
            LEFT JOIN (SELECT DISTINCT {parent} AS v FROM {parent_table}) p ON p.v = d.v""")
        numerator, denominator = cur.fetchone()
    return GateResult(gate, numerator, denominator, threshold)


UPSERT_GATE = """
    INSERT INTO ops.feature_gates (feature, relationship, match_rate, numerator, denominator,
                                   threshold, status, reason, evaluated_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
    ON CONFLICT (feature) DO UPDATE SET relationship = EXCLUDED.relationship,
        match_rate = EXCLUDED.match_rate, numerator = EXCLUDED.numerator,
        denominator = EXCLUDED.denominator, threshold = EXCLUDED.threshold,
        status = EXCLUDED.status, reason = EXCLUDED.reason, evaluated_at = EXCLUDED.evaluated_at"""


def evaluate_gates(conn, threshold: float = DEFAULT_THRESHOLD) -> list[GateResult]:
    """Measure every gate and store it in ``ops.feature_gates`` (caller's transaction)."""
    return _store(conn, [measure(conn, gate, threshold) for gate in GATES])


def refresh_gates(conn, change: int) -> tuple[list[GateResult], list[str]]:
    """Measure again the gates one of whose tables an ingestion changed since the gate was last
    measured (the others are as stored), store them and record ``change``, the last core change,
    for them. Returns every gate's result and the features measured again."""
    stale = watermarks.stale(conn, GATES)
    _store(conn, [measure(conn, gate) for gate in stale])
    for gate in stale:
        watermarks.advance(conn, gate.watermark, change)
    return stored_gates(conn), [gate.feature for gate in stale]


def _store(conn, results: list[GateResult]) -> list[GateResult]:
    with conn.cursor() as cur:
        for r in results:
            cur.execute(
                UPSERT_GATE,
                (
                    r.gate.feature,
                    r.gate.relationship,
                    r.match_rate,
                    r.numerator,
                    r.denominator,
                    r.threshold,
                    r.status,
                    r.reason,
                ),
            )
    return results


def write_gates_report(results: list[GateResult], reports: Path) -> Path:
    reports.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Feature gates",
        "",
        "A feature is served only when the relationship it relies on holds for at least the "
        "threshold share of distinct key values; otherwise its endpoint answers "
        "`NOT_SUPPORTED_BY_DATA` with the figures below.",
        "",
        "| feature | relationship | match rate | threshold | status |",
        "|---|---|---:|---:|---|",
    ]
    for r in results:
        rate = "n/a" if r.match_rate is None else f"{r.match_rate:.4f}"
        lines.append(f"| {r.gate.feature} | {r.gate.relationship} | {rate} | {r.threshold:.2f} | {r.status} |")
    lines += ["", "## What it means", ""]
    for r in results:
        effect = "available" if r.status == SUPPORTED else "switched off"
        lines.append(f"- **{r.gate.feature}** ({effect}): {r.reason}.")
    path = reports / REPORT_NAME
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored_gates(conn) -> list[GateResult]:
    """The gates as last evaluated (when core has not changed since, they are still true)."""
    with conn.cursor() as cur:
        cur.execute("SELECT feature, numerator, denominator, threshold FROM ops.feature_gates")
        stored = {feature: (n, d, t) for feature, n, d, t in cur.fetchall()}
    return [GateResult(g, *stored[g.feature]) if g.feature in stored else measure(conn, g) for g in GATES]
