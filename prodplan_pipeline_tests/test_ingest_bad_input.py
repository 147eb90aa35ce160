"""Bad input through `prodplan ingest`, as a user meets it: a file that is not a workbook, a sheet
whose shape differs from the contract, and cells that do not fit their column.

Ingestions are real `prodplan ingest` commands (Dagster and all) on the real test PostgreSQL, a
process each, forked from the fork server (``conftest.run_cli_forked``: ~4 s of interpreter
start and imports less each). The refusals of a file that is not a workbook or inflates past the
limit run in a fresh interpreter (``run_cli``): what the whole process prints is their subject.
The refusals of a sheet's shape and of damaged or empty workbooks, whose subject is the
paragraph and what the refused run leaves, call the command in the test's process
(``conftest.run_cli_in_process``). Bad workbooks are derived from the project's own sample by
rewriting the XML inside the zip (``bad_workbooks.py``), so each defect is exactly the one
intended. The expectations come from
DATA_CONTRACT.md (quirks and handling) and PIPELINE.md (exit codes 0 / 1 / 2).

Cost: each ingestion that reaches Dagster takes ~5 s, so the row-level defects are combined in
one workbook, ingested once by a module fixture, and each test reads its own defect's outcome. The
good sample is ingested once (``good_ingest``); the fixtures that start from it work on copies of
its databases and home.
"""

from __future__ import annotations

import json
import struct
import subprocess
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import openpyxl
import psycopg2
import pytest
from sqlalchemy.engine import make_url

from prodplan_pipeline.contract import SHEETS, ColumnType, sheet
from prodplan_pipeline.warehouse.connection import libpq_dsn
from prodplan_pipeline.workbook.inspect import inspect_workbook
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.bad_workbooks import (
    DATE_STYLE,
    FILE_CASES,
    FORMATTED_EMPTY,
    SHEET_CASES,
    column_index,
    formula_cell,
    number_cell,
    number_of,
    rewrite,
    sheet_rows,
    text_cell,
)
from prodplan_pipeline_tests.conftest import (
    RECENT_PARTITIONS,
    cli_environment,
    copied_environment,
    run_cli,
    run_cli_forked,
    run_cli_in_process,
)
from prodplan_pipeline_tests.warehouse_queries import TABLE_CHECKSUM
from prodplan_pipeline_tests.workbook_edit import Rows

SCALE, SEED = 0.01, 7


# --- environments and queries ------------------------------------------------------------------


def new_env(databases, home: Path, purpose: str) -> dict[str, str]:
    return cli_environment(databases, home, purpose, PRODPLAN_PARTITIONS_START=RECENT_PARTITIONS)


def query(env: dict[str, str], statement: str, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(libpq_dsn(make_url(env["PRODPLAN_DATABASE_URL"])))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def core_checksums(env: dict[str, str]) -> dict[str, str]:
    """Row count and an order-independent md5 of every core table's content."""
    return {s.table: query(env, TABLE_CHECKSUM.format(table=s.core_table))[0][0] for s in SHEETS}


def ingestion_run_count(env: dict[str, str]) -> int:
    return query(env, "SELECT count(*) FROM ops.ingestion_runs")[0][0]


@dataclass
class Ingest:
    result: subprocess.CompletedProcess
    summary: dict | None  # the --json document (last stdout line), when printed

    @property
    def code(self) -> int:
        return self.result.returncode

    @property
    def message(self) -> str:
        """The final error paragraph (stderr may start with progress lines)."""
        lines = [line for line in self.result.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def ingest(env: dict[str, str], workbook: Path, run=run_cli_forked) -> Ingest:
    """``prodplan ingest --json``, in a forked process (conftest.run_cli_forked); ``run`` may be
    ``run_cli_in_process``, for a refusal whose subject is its message and what it leaves, or
    ``run_cli``, a fresh interpreter, where the subject is what the process prints."""
    result = run(["ingest", "--workbook", str(workbook), "--json"], env)
    lines = result.stdout.strip().splitlines()
    summary = None
    if lines and lines[-1].startswith("{"):
        summary = json.loads(lines[-1])
    return Ingest(result, summary)


# --- the good sample, and the warehouse it leaves (the bad workbooks: bad_workbooks.py) -----------


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """The good workbook and its rows per sheet."""
    path = tmp_path_factory.mktemp("sample") / "Folha_IA.xlsx"
    return path, write_sample(path, scale=SCALE, seed=SEED)


@pytest.fixture(scope="module")
def good_ingest(databases, tmp_path_factory, sample) -> dict[str, str]:
    """The good sample's first ingest into fresh databases (never written to again: copies are)."""
    env = new_env(databases, tmp_path_factory.mktemp("good_ingest") / "home", "badinput_good")
    first = ingest(env, sample[0])
    assert first.code == 0, first.result.stderr
    assert query(env, "SELECT count(*) FROM core.ordens_fabrico")[0][0] > 0
    return env


def ingested_copy(databases, good_ingest: dict[str, str], home: Path) -> dict[str, str]:
    """An environment as the good sample's first ingest left it, with its own databases and home."""
    env = copied_environment(databases, good_ingest, home)
    assert core_checksums(env) == core_checksums(good_ingest)
    return env


@pytest.fixture(scope="module")
def loaded(databases, tmp_path_factory, good_ingest) -> dict[str, str]:
    """A warehouse holding the good sample: bad input must leave it exactly as it is."""
    return ingested_copy(databases, good_ingest, tmp_path_factory.mktemp("home_loaded") / "home")


@pytest.fixture
def unchanged(loaded):
    """The loaded warehouse; asserts after the test that no core row changed."""
    before = core_checksums(loaded)
    yield loaded
    assert core_checksums(loaded) == before, "bad input changed core"


def assert_one_paragraph(outcome: Ingest, path: Path, *phrases: str) -> None:
    stderr = outcome.result.stderr
    assert outcome.code == 1, (outcome.code, stderr)
    assert "Traceback" not in stderr and "Traceback" not in outcome.result.stdout
    message = outcome.message
    assert message.startswith("prodplan ingest: "), stderr
    assert str(path) in message, message
    for phrase in phrases:
        assert phrase in message, (phrase, message)


# --- file level: not a workbook at all ------------------------------------------------------------


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_a_file_that_is_not_a_workbook_fails_with_one_paragraph(case, unchanged, sample, tmp_path):
    make, phrases = FILE_CASES[case]
    path = make(tmp_path, sample[0]).resolve()
    runs = ingestion_run_count(unchanged)
    outcome = ingest(unchanged, path, run=run_cli)
    assert_one_paragraph(outcome, path, *phrases)
    # found before Dagster starts: the message is all there is on stderr, one paragraph
    assert outcome.result.stderr.strip() == outcome.message, outcome.result.stderr
    assert ingestion_run_count(unchanged) == runs, "not a workbook: no ingestion run is registered"


def test_an_empty_workbook_fails_naming_the_missing_sheets(unchanged, tmp_path):
    path = tmp_path.resolve() / "blank.xlsx"
    openpyxl.Workbook().save(path)  # one empty default sheet, "Sheet"
    outcome = ingest(unchanged, path, run=run_cli_in_process)
    assert_one_paragraph(outcome, path, "the workbook has: Sheet")
    positions = [outcome.message.find(f"the sheet '{s.name}' is missing") for s in SHEETS]
    assert -1 not in positions, outcome.message
    assert positions == sorted(positions), "in the contract's order, every time"
    assert outcome.summary and outcome.summary["exit_code"] == 1


def test_damaged_sheet_data_inside_an_intact_zip_fails_naming_the_sheet(unchanged, sample, tmp_path):
    """The zip directory is fine (so the file is hashed and accepted), but the compressed
    bytes of one sheet are damaged: found when that sheet is read. (The sheet's content also
    differs from the loaded one, or it would be skipped as unchanged without being read.)"""
    path = tmp_path.resolve() / "bitrot.xlsx"

    def renamed_phase(rows: Rows) -> Rows:
        rows[2][column_index("Fases", "Fase_Nome")] = text_cell("Corte (renamed)")
        return rows

    changed = rewrite(sample[0], tmp_path / "changed.xlsx", {"Fases": renamed_phase})
    data = bytearray(changed.read_bytes())
    with zipfile.ZipFile(changed) as archive:
        info = archive.getinfo(inspect_workbook(changed).sheet_parts["Fases"])
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for i in range(start + 200, start + 400):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    inspect_workbook(path)  # the damage is not visible from the zip directory
    outcome = ingest(unchanged, path, run=run_cli_in_process)
    assert_one_paragraph(outcome, path, "the sheet 'Fases' cannot be read", "re-export")
    assert outcome.summary and outcome.summary["exit_code"] == 1


# --- sheet level: a missing sheet, a header that differs from the contract ------------------------


@pytest.mark.parametrize("case", list(SHEET_CASES))
def test_a_sheet_that_differs_from_the_contract_fails_and_core_is_untouched(case, loaded, sample, tmp_path):
    name, how, phrases = SHEET_CASES[case]
    path = rewrite(sample[0], tmp_path.resolve() / f"{case}.xlsx", **how)
    before = core_checksums(loaded)
    outcome = ingest(loaded, path, run=run_cli_in_process)
    assert_one_paragraph(outcome, path, f"'{name}'", *phrases)
    assert outcome.summary and outcome.summary["exit_code"] == 1
    assert all(p in outcome.summary["error"] for p in phrases), outcome.summary["error"]
    assert core_checksums(loaded) == before, "nothing already in core may change"
    run_id = outcome.summary["ingestion_run_id"]
    assert query(loaded, "SELECT status FROM ops.ingestion_runs WHERE run_id = %s", (run_id,)) == [("failed",)]
    # nothing of the run was merged, not even the sheets that were fine
    assert query(
        loaded,
        "SELECT count(*) FROM ops.ingestion_sheet_runs WHERE run_id = %s AND (status = 'merged' OR reconciled)",
        (run_id,),
    ) == [(0,)]


# --- row level: one workbook with a defect per row, ingested once over the good sample ------------


@dataclass(frozen=True)
class Cell:
    """One edited cell: where, what was written, and the expected outcome."""

    sheet: str
    header: str
    cell: str  # the <c> element written
    raw: str | None  # the text expected as the reject's raw_value (None: accepted)
    reason: str | None  # the expected reject reason (None: accepted)
    core: object = None  # for an accepted cell: the value expected in core


# Excel rows are chosen by the fixture (distinct rows with a key unique in the sheet).
REJECTED_CELLS = {
    "text_in_int": Cell("OrdensFabrico", "Of_ProdutoId", text_cell("abc"), "abc", "bad_type"),
    "text_in_decimal": Cell("FasesOrdemFabrico", "FaseOf_Peso", text_cell("abc"), "abc", "bad_type"),
    "text_in_nullable_decimal": Cell("Modelos", "Produto_PesoDesmolde", text_cell("abc"), "abc", "bad_type"),
    "impossible_date": Cell("OrdensFabrico", "Of_DataCriacao", text_cell("31/02/2024"), "31/02/2024", "bad_type"),
    "not_a_date": Cell("OrdensFabrico", "Of_DataCriacao", text_cell("not a date"), "not a date", "bad_type"),
    "not_a_date_nullable": Cell(
        "OrdensFabrico", "Of_DataAcabamento", text_cell("not a date"), "not a date", "bad_type"
    ),
    "impossible_iso_date": Cell("OrdensFabrico", "Of_DataCriacao", text_cell("2024-02-30"), "2024-02-30", "bad_type"),
    "day_first_date": Cell("OrdensFabrico", "Of_DataCriacao", text_cell("15/01/2024"), "15/01/2024", "bad_type"),
    "day_first_date_nullable": Cell(
        "OrdensFabrico", "Of_DataTransporte", text_cell("15/01/2024"), "15/01/2024", "bad_type"
    ),
    "garbage_date": Cell("OrdensFabrico", "Of_DataCriacao", text_cell("garbage"), "garbage", "bad_type"),
    "null_in_required_date": Cell("OrdensFabrico", "Of_DataCriacao", text_cell("NULL"), "NULL", "required_null"),
    "null_in_required_int": Cell("FasesOrdemFabrico", "FaseOf_FaseId", text_cell("NULL"), "NULL", "required_null"),
    "null_in_required_text": Cell("Funcionarios", "Funcionario_Nome", text_cell("NULL"), "NULL", "required_null"),
    "fraction_in_int": Cell("OrdensFabrico", "Of_FaseId", number_cell(4.5), "4.5", "bad_type"),
    "fraction_in_int_phase": Cell("FasesOrdemFabrico", "FaseOf_Sequencia", number_cell(4.5), "4.5", "bad_type"),
    "fraction_in_smallint": Cell("OrdemFabricoErros", "OFCH_GRAVIDADE", number_cell(2.5), "2.5", "bad_type"),
    # the raw value is the text the user sees in Excel, whatever the cell holds
    "quotes_and_tab_in_int": Cell(
        "OrdensFabrico", "Of_ProdutoId", text_cell('5" kayak\tC:\\x'), '5" kayak\tC:\\x', "bad_type"
    ),
    "date_cell_in_int": Cell(
        "OrdensFabrico", "Of_ProdutoId", f'<c s="{DATE_STYLE}"><v>45306.5</v></c>', "2024-01-15 12:00:00", "bad_type"
    ),
    "error_cell_in_int": Cell("OrdensFabrico", "Of_ProdutoId", '<c t="e"><v>#DIV/0!</v></c>', "#DIV/0!", "bad_type"),
    # read as text (nullable), an error cell has no text: it must not become a silent NULL
    "error_cell_in_nullable_date": Cell(
        "OrdensFabrico", "Of_DataAcabamento", '<c t="e"><v>#N/A</v></c>', "#N/A", "bad_type"
    ),
    # a serial date beyond year 9999 (no datetime can hold it): one bad cell, not an aborted run
    "huge_serial_in_date": Cell(
        "OrdensFabrico", "Of_DataCriacao", f'<c s="{DATE_STYLE}"><v>10000000</v></c>', "10000000", "bad_type"
    ),
    "huge_serial_in_nullable_date": Cell(
        "OrdensFabrico", "Of_DataAcabamento", f'<c s="{DATE_STYLE}"><v>10000000</v></c>', "10000000", "bad_type"
    ),
    # a boolean is not a number, in a 0/1 flag column as in any other number column
    "true_in_flag": Cell("FasesOrdemFabrico", "FaseOf_Retorno", '<c t="b"><v>1</v></c>', "TRUE", "bad_type"),
    "true_in_nullable_int": Cell("FasesOrdemFabrico", "FaseOf_Turno", '<c t="b"><v>1</v></c>', "TRUE", "bad_type"),
    # too large for any number type: the raw value is the digits as typed, not "inf"
    "huge_number": Cell("FasesOrdemFabrico", "FaseOf_Coeficiente", f"<c><v>{'9' * 400}</v></c>", "9" * 400, "bad_type"),
}
ACCEPTED_CELLS = {
    "iso_text_datetime": Cell(
        "OrdensFabrico", "Of_DataCriacao", text_cell("2024-01-15 08:30"), None, None, datetime(2024, 1, 15, 8, 30)
    ),
    "iso_text_date_nullable": Cell(
        "OrdensFabrico", "Of_DataTransporte", text_cell("2024-01-15"), None, None, datetime(2024, 1, 15)
    ),
    "formula_int": Cell("OrdensFabrico", "Of_ProdutoId", formula_cell("40000+123", 40123), None, None, 40123),
    "formula_datetime": Cell(
        "OrdensFabrico",
        "Of_DataCriacao",
        formula_cell("DATE(2023,6,30)+0.5", 45107.5, DATE_STYLE),
        None,
        None,
        datetime(2023, 6, 30, 12, 0),
    ),
    "formula_date_nullable": Cell(
        "OrdensFabrico",
        "Of_DataAcabamento",
        formula_cell("DATE(2024,3,1)", 45352, DATE_STYLE),
        None,
        None,
        datetime(2024, 3, 1),
    ),
    "number_as_text_decimal": Cell(
        "FasesOrdemFabrico", "FaseOf_Peso", text_cell(" 12.5 "), None, None, Decimal("12.5")
    ),
    "number_as_text_int": Cell("FasesOrdemFabrico", "FaseOf_Sequencia", text_cell("7"), None, None, 7),
}
BLANK_ROW_SHEET = "FuncionariosFaseOrdemFabrico"
TRAILING_SHEET = "Fases"


@dataclass
class RowLevel:
    env: dict[str, str]
    counts: dict[str, int]
    outcome: Ingest
    rows: dict[str, int]  # case -> Excel row edited
    keys: dict[str, int | None]  # case -> the row's key (first column), when it has one
    blank_row: int
    rejects: dict[tuple[str, int], dict]  # (sheet, excel_row) -> reject
    sheet_runs: dict[str, dict]
    before: dict[str, dict | None] = field(default_factory=dict)  # case -> core row, good sample
    after: dict[str, dict | None] = field(default_factory=dict)  # case -> core row, bad workbook
    staged: dict[str, dict] = field(default_factory=dict)  # case -> its staging row
    # keyless sheet -> its core rows (source columns) before and after the bad workbook
    keyless_before: dict[str, Counter] = field(default_factory=dict)
    keyless_after: dict[str, Counter] = field(default_factory=dict)


def keyless_rows(env: dict[str, str], cells) -> dict[str, Counter]:
    """Every core row of each keyless sheet the cases edit, as a multiset of its source values."""
    names = {c.sheet for c in cells.values() if sheet(c.sheet).key is None}
    return {
        name: Counter(query(env, f"SELECT {', '.join(sheet(name).column_names)} FROM {sheet(name).core_table}"))
        for name in names
    }


def core_row(env: dict[str, str], sheet_name: str, key: int) -> dict | None:
    s = sheet(sheet_name)
    rows = query(env, f"SELECT row_to_json(t)::text FROM {s.core_table} t WHERE {s.key_names[0]} = %s", (key,))
    assert len(rows) <= 1
    return json.loads(rows[0][0]) if rows else None


def _pick_rows(book: Path) -> tuple[dict[str, int], dict[str, int | None]]:
    """A distinct Excel row per case; in keyed sheets, a row whose key occurs once."""
    rows, keys = {}, {}
    candidates: dict[str, list[tuple[int, float | None]]] = {}
    for case, cell in {**REJECTED_CELLS, **ACCEPTED_CELLS}.items():
        if cell.sheet not in candidates:
            data = sheet_rows(book, cell.sheet)
            firsts = {r: number_of(cells[0]) for r, cells in data.items() if r > 1}
            seen: dict[float | None, int] = {}
            for value in firsts.values():
                seen[value] = seen.get(value, 0) + 1
            unique = sheet(cell.sheet).key is None or cell.sheet == "Funcionarios"
            candidates[cell.sheet] = [(r, v) for r, v in sorted(firsts.items()) if r >= 3 and (unique or seen[v] == 1)]
        row, key = candidates[cell.sheet].pop(0)
        rows[case] = row
        keys[case] = int(key) if sheet(cell.sheet).key and key is not None else None
    return rows, keys


def _row_level_workbook(source: Path, target: Path, rows: dict[str, int], blank_row: int) -> Path:
    cells = {**REJECTED_CELLS, **ACCEPTED_CELLS}

    def editor(name: str) -> Callable[[Rows], Rows]:
        def edit(data: Rows) -> Rows:
            for case, cell in cells.items():
                if cell.sheet == name:
                    data[rows[case]][column_index(name, cell.header)] = cell.cell
            return data

        return edit

    def blank(data: Rows) -> Rows:  # an empty row inserted between data rows
        return {(r + 1 if r >= blank_row else r): c for r, c in data.items()}

    def trailing(data: Rows) -> Rows:  # formatting without values right of and below the data
        last = max(data)
        for cells_ in data.values():
            cells_ += [FORMATTED_EMPTY, FORMATTED_EMPTY]
        data[last + 1] = [FORMATTED_EMPTY] * 7
        data[last + 2] = []
        data[last + 3] = [FORMATTED_EMPTY] * 3
        return data

    edits = {name: editor(name) for name in {c.sheet for c in cells.values()}}
    assert BLANK_ROW_SHEET not in edits and TRAILING_SHEET not in edits, "one kind of edit per sheet"
    edits[BLANK_ROW_SHEET] = blank
    edits[TRAILING_SHEET] = trailing
    return rewrite(source, target, edits)


@pytest.fixture(scope="module")
def row_level(databases, tmp_path_factory, sample, good_ingest) -> RowLevel:
    book, counts = sample
    env = ingested_copy(databases, good_ingest, tmp_path_factory.mktemp("home_rows") / "home")

    rows, keys = _pick_rows(book)
    blank_row = 2 + counts[BLANK_ROW_SHEET] // 2
    bad_book = _row_level_workbook(book, tmp_path_factory.mktemp("bad") / "rows.xlsx", rows, blank_row)
    cells = {**REJECTED_CELLS, **ACCEPTED_CELLS}
    before = {case: core_row(env, cells[case].sheet, key) for case, key in keys.items() if key is not None}
    keyless_before = keyless_rows(env, cells)

    outcome = ingest(env, bad_book)
    assert outcome.code == 0, outcome.result.stderr
    run_id = outcome.summary["ingestion_run_id"]
    rejects = {}
    for sheet_name, excel_row, reason, column, raw, detail, raw_row in query(
        env,
        """
            SELECT sheet, excel_row, reason_code, column_name, raw_value, detail, raw_row::text
            FROM quarantine.rejects WHERE run_id = %s""",
        (run_id,),
    ):
        assert (sheet_name, excel_row) not in rejects, "one reject per Excel row"
        rejects[(sheet_name, excel_row)] = dict(
            reason_code=reason, column_name=column, raw_value=raw, detail=detail, raw_row=json.loads(raw_row)
        )
    sheet_runs = {}
    for record in query(
        env, "SELECT row_to_json(r)::text FROM ops.ingestion_sheet_runs r WHERE run_id = %s", (run_id,)
    ):
        run = json.loads(record[0])
        sheet_runs[run["sheet"]] = run
    after = {case: core_row(env, cells[case].sheet, key) for case, key in keys.items() if key is not None}
    staged = {}
    for case, cell in cells.items():
        s = sheet(cell.sheet)
        found = query(env, f"SELECT row_to_json(t)::text FROM {s.staging_table} t WHERE excel_row = %s", (rows[case],))
        staged[case] = json.loads(found[0][0])
    return RowLevel(
        env,
        counts,
        outcome,
        rows,
        keys,
        blank_row,
        rejects,
        sheet_runs,
        before,
        after,
        staged,
        keyless_before,
        keyless_rows(env, cells),
    )


def test_the_run_succeeds_and_every_sheet_reconciles(row_level):
    summary = row_level.outcome.summary
    assert summary["exit_code"] == 0 and summary["error"] is None and summary["failed_checks"] == []
    assert set(row_level.sheet_runs) == {s.name for s in SHEETS}
    for name, run in row_level.sheet_runs.items():
        assert run["reconciled"] is True, (name, run)
        edited = name in {c.sheet for c in REJECTED_CELLS.values()} | {BLANK_ROW_SHEET, TRAILING_SHEET}
        assert run["status"] == "merged" if edited else run["status"] in ("merged", "skipped_unchanged"), (
            name,
            run["status"],
        )  # an edited sheet is read again
        rejected = sum(1 for (s, _) in row_level.rejects if s == name)
        assert run["rows_rejected"] == rejected, name
        assert run["rows_in_core"] + run["rows_duplicate"] + run["rows_rejected"] == run["rows_excel"], name
    assert query(
        row_level.env, "SELECT status FROM ops.ingestion_runs WHERE run_id = %s", (summary["ingestion_run_id"],)
    ) == [("succeeded",)]


def test_the_rejects_are_exactly_the_defective_rows(row_level):
    expected = {(c.sheet, row_level.rows[case]) for case, c in REJECTED_CELLS.items()}
    expected.add((BLANK_ROW_SHEET, row_level.blank_row))
    assert set(row_level.rejects) == expected


def assert_rejected(row_level: RowLevel, case: str) -> dict:
    cell = REJECTED_CELLS[case]
    reject = row_level.rejects.get((cell.sheet, row_level.rows[case]))
    assert reject is not None, f"{case}: Excel row {row_level.rows[case]} of {cell.sheet} was not rejected"
    assert reject["reason_code"] == cell.reason, (case, reject)
    assert reject["column_name"] == cell.header, (case, reject)
    assert reject["raw_value"] == cell.raw, (case, reject)
    assert cell.header in reject["detail"], (case, reject["detail"])
    raw_row, contract_sheet = reject["raw_row"], sheet(cell.sheet)
    assert set(raw_row) == set(contract_sheet.headers), (case, raw_row)
    assert raw_row[cell.header] == cell.raw, (case, raw_row)
    key = row_level.keys[case]
    if key is not None:
        assert raw_row[contract_sheet.headers[0]] == str(key), (case, raw_row)
    # the row's other (required) cells are there as text, not lost
    for column in contract_sheet.columns:
        if column.required and column.header != cell.header:
            assert raw_row[column.header] not in (None, ""), (case, column.header, raw_row)
    # the staging row is flagged, and the bad cell was not coerced into a value
    staged = row_level.staged[case]
    column = contract_sheet.column(cell.header)
    assert staged["rejected"] is True, (case, staged)
    assert staged[column.name] == (cell.raw if column.type is ColumnType.TEXT else None), (case, staged)
    return reject


def assert_core_row_kept(row_level: RowLevel, case: str) -> None:
    """A rejected row's key keeps its previous core row, values unchanged. A keyless row has no
    identity to keep: exactly its previous row leaves core (it is in quarantine, whole), and no
    other row changes; a truncated value would have landed as a row of its own."""
    if row_level.keys[case] is None:
        name = REJECTED_CELLS[case].sheet
        before, after = row_level.keyless_before[name], row_level.keyless_after[name]
        assert after - before == Counter(), (case, after - before)
        removed = list((before - after).elements())
        assert len(removed) == 1, (case, removed)
        raw_row = row_level.rejects[(name, row_level.rows[case])]["raw_row"]
        kept = {c.name: raw_row[c.header] for c in sheet(name).columns if c.header != REJECTED_CELLS[case].header}
        values = dict(zip(sheet(name).column_names, removed[0], strict=True))
        assert {k: None if v is None else str(v) for k, v in values.items() if k in kept} == {
            k: v or None for k, v in kept.items()
        }, (case, values, raw_row)
        return
    assert row_level.before[case] is not None
    assert row_level.after[case] == row_level.before[case], case


@pytest.mark.parametrize("case", ["text_in_int", "text_in_decimal", "text_in_nullable_decimal"])
def test_text_in_a_number_column_is_rejected_as_bad_type(row_level, case):
    assert_rejected(row_level, case)
    assert_core_row_kept(row_level, case)


@pytest.mark.parametrize(
    "case", ["impossible_date", "not_a_date", "not_a_date_nullable", "impossible_iso_date", "garbage_date"]
)
def test_an_unparseable_date_is_rejected_as_bad_type(row_level, case):
    assert_rejected(row_level, case)
    assert_core_row_kept(row_level, case)


@pytest.mark.parametrize("case", ["null_in_required_date", "null_in_required_int", "null_in_required_text"])
def test_the_text_null_in_a_required_column_is_rejected_as_required_null(row_level, case):
    reject = assert_rejected(row_level, case)
    assert "required" in reject["detail"]
    assert_core_row_kept(row_level, case)


def test_a_blank_row_between_data_rows_is_rejected_as_blank_row(row_level):
    reject = row_level.rejects[(BLANK_ROW_SHEET, row_level.blank_row)]
    assert reject["reason_code"] == "blank_row"
    assert reject["column_name"] is None and reject["raw_value"] is None
    assert reject["raw_row"] == {h: None for h in sheet(BLANK_ROW_SHEET).headers}
    run = row_level.sheet_runs[BLANK_ROW_SHEET]
    assert run["rows_excel"] == row_level.counts[BLANK_ROW_SHEET] + 1
    assert run["rows_rejected"] == 1
    # the rows after the blank one were read (not cut off at the gap) and landed
    s = sheet(BLANK_ROW_SHEET)
    ((last_staged,),) = query(row_level.env, f"SELECT max(excel_row) FROM {s.staging_table} WHERE NOT rejected")
    assert last_staged == row_level.counts[BLANK_ROW_SHEET] + 2
    ((in_core,),) = query(row_level.env, f"SELECT count(*) FROM {s.core_table}")
    assert in_core == run["rows_in_core"] == run["rows_excel"] - 1 - run["rows_duplicate"]


def test_trailing_empty_rows_and_columns_are_ignored(row_level):
    run = row_level.sheet_runs[TRAILING_SHEET]
    assert run["status"] == "merged", "the edited sheet must have been read again"
    assert run["rows_excel"] == row_level.counts[TRAILING_SHEET]
    assert run["rows_rejected"] == 0
    assert not [k for k in row_level.rejects if k[0] == TRAILING_SHEET]
    s = sheet(TRAILING_SHEET)
    ((in_core,),) = query(row_level.env, f"SELECT count(*) FROM {s.core_table}")
    assert in_core == row_level.counts[TRAILING_SHEET]


@pytest.mark.parametrize("case", ["formula_int", "formula_datetime", "formula_date_nullable"])
def test_a_formula_cell_is_ingested_as_its_cached_value(row_level, case):
    assert_accepted(row_level, case)


@pytest.mark.parametrize("case", ["iso_text_datetime", "iso_text_date_nullable"])
def test_a_date_stored_as_iso_text_is_accepted(row_level, case):
    assert_accepted(row_level, case)


@pytest.mark.parametrize("case", ["day_first_date", "day_first_date_nullable"])
def test_a_day_first_date_is_rejected_not_guessed(row_level, case):
    assert_rejected(row_level, case)
    assert_core_row_kept(row_level, case)


@pytest.mark.parametrize("case", ["number_as_text_decimal", "number_as_text_int"])
def test_a_number_stored_as_text_is_accepted(row_level, case):
    assert_accepted(row_level, case)


@pytest.mark.parametrize("case", ["fraction_in_int", "fraction_in_int_phase", "fraction_in_smallint"])
def test_a_fraction_in_an_integer_column_is_rejected_not_truncated(row_level, case):
    assert_rejected(row_level, case)  # includes: staged as NULL, not as 4 (or 2)
    assert_core_row_kept(row_level, case)


@pytest.mark.parametrize(
    "case", ["quotes_and_tab_in_int", "date_cell_in_int", "error_cell_in_int", "error_cell_in_nullable_date"]
)
def test_a_cell_of_the_wrong_kind_is_rejected_with_its_text_as_excel_shows_it(row_level, case):
    assert_rejected(row_level, case)
    assert_core_row_kept(row_level, case)


@pytest.mark.parametrize(
    "case",
    ["huge_serial_in_date", "huge_serial_in_nullable_date", "true_in_flag", "true_in_nullable_int", "huge_number"],
)
def test_a_value_no_column_type_can_hold_is_one_bad_cell_with_its_raw_text(row_level, case):
    assert_rejected(row_level, case)
    assert_core_row_kept(row_level, case)


def assert_accepted(row_level: RowLevel, case: str) -> None:
    cell = ACCEPTED_CELLS[case]
    assert (cell.sheet, row_level.rows[case]) not in row_level.rejects, case
    column = sheet(cell.sheet).column(cell.header).name
    before, after = row_level.before[case], row_level.after[case]
    assert after is not None, f"{case}: key {row_level.keys[case]} is not in core"
    assert _value(before[column], cell.core) != cell.core, f"{case}: the edit must change the value"
    assert _value(after[column], cell.core) == cell.core, (case, after[column])
    others = {k: v for k, v in after.items() if k != column and k in sheet(cell.sheet).column_names}
    assert others == {k: before[k] for k in others}, f"{case}: only the edited cell changed"


def _value(json_value, like):
    """A core value from row_to_json, as the Python type of the expected value."""
    if json_value is None:
        return None
    if isinstance(like, datetime):
        return datetime.fromisoformat(json_value)
    if isinstance(like, Decimal):
        return Decimal(str(json_value))
    return json_value


def test_a_key_seen_only_in_a_rejected_row_keeps_its_previous_core_row(row_level):
    case = "garbage_date"
    key = row_level.keys[case]
    reject = assert_rejected(row_level, case)
    assert reject["raw_row"]["Of_Id"] == str(key)
    assert "the row already in core with this key was kept" in reject["detail"], "the reject says so"
    before, after = row_level.before[case], row_level.after[case]
    assert before is not None and after == before, "yesterday's good row must survive today's bad cell"
    assert after["of_data_criacao"] is not None
    # and the same holds for every rejected row whose key was in core before
    kept = [c for c in REJECTED_CELLS if row_level.keys[c] is not None]
    assert len(kept) >= 10
    for c in kept:
        assert row_level.after[c] == row_level.before[c], c


# --- sheet layout: what precedes the header, what trails the data ----------------------------------

LEADING_SHEET, TAIL_SHEET = "Modelos", "FasesStandardModelos"


def _styled_rows_above_the_header(data: Rows) -> Rows:
    """Two formatted empty rows above the header; a bad cell in the (shifted) data row 12."""
    shifted = {r + 2: cells for r, cells in data.items()}
    shifted[1], shifted[2] = [FORMATTED_EMPTY] * 3, [FORMATTED_EMPTY]
    shifted[12][column_index(LEADING_SHEET, "Produto_PesoDesmolde")] = text_cell("abc")
    return shifted


def _styled_and_empty_text_rows_after_the_data(data: Rows) -> Rows:
    last = max(data)
    for n in range(1, 1001):
        data[last + n] = [FORMATTED_EMPTY] * 3
    for n in range(1001, 1006):
        data[last + n] = [text_cell("")] * 5
    return data


@pytest.fixture(scope="module")
def layout(databases, tmp_path_factory, sample, good_ingest):
    book, counts = sample
    env = ingested_copy(databases, good_ingest, tmp_path_factory.mktemp("home_layout") / "home")
    edited = rewrite(
        book,
        tmp_path_factory.mktemp("layout") / "layout.xlsx",
        {LEADING_SHEET: _styled_rows_above_the_header, TAIL_SHEET: _styled_and_empty_text_rows_after_the_data},
    )
    outcome = ingest(env, edited)
    assert outcome.code == 0, outcome.result.stderr
    return env, counts, outcome.summary["ingestion_run_id"]


def test_excel_row_numbers_are_right_whatever_precedes_the_header(layout):
    env, counts, run_id = layout
    rejects = query(
        env,
        "SELECT excel_row, column_name, raw_value FROM quarantine.rejects WHERE run_id = %s AND sheet = %s",
        (run_id, LEADING_SHEET),
    )
    assert rejects == [(12, "Produto_PesoDesmolde", "abc")]
    ((rows_excel,),) = query(
        env, "SELECT rows_excel FROM ops.ingestion_sheet_runs WHERE run_id = %s AND sheet = %s", (run_id, LEADING_SHEET)
    )
    assert rows_excel == counts[LEADING_SHEET]


def test_trailing_styled_and_empty_text_rows_are_not_data_rows(layout):
    env, counts, run_id = layout
    ((rows_excel, rejected, reconciled),) = query(
        env,
        """SELECT rows_excel, rows_rejected, reconciled
        FROM ops.ingestion_sheet_runs WHERE run_id = %s AND sheet = %s""",
        (run_id, TAIL_SHEET),
    )
    assert (rows_excel, rejected, reconciled) == (counts[TAIL_SHEET], 0, True)


def test_a_title_row_above_the_header_is_named_with_where_the_header_is(unchanged, sample, tmp_path):
    def title_row(data: Rows) -> Rows:
        shifted = {r + 1: cells for r, cells in data.items()}
        shifted[1] = [text_cell("Exportacao ERP")]
        return shifted

    book = rewrite(sample[0], tmp_path / "titled.xlsx", {"Fases": title_row})
    outcome = ingest(unchanged, book, run=run_cli_in_process)
    assert_one_paragraph(
        outcome, book, "sheet 'Fases'", "the header was not found on row 1", "row 2 holds the contract's header"
    )


def test_a_workbook_that_inflates_past_the_limit_is_refused_before_reading(unchanged, sample, tmp_path):
    # 1.1 GiB of XML in a sheet part, a few MB on disk: refused from the zip directory alone
    book = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(sample[0]) as zin, zipfile.ZipFile(book, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        with zout.open("xl/media/padding.xml", "w", force_zip64=True) as padding:
            block = b" " * (1 << 24)
            for _ in range(70):
                padding.write(block)
    assert book.stat().st_size < 20 * 2**20
    outcome = ingest(unchanged, book, run=run_cli)
    assert_one_paragraph(outcome, book, "inflates to 1,1", "MiB allowed", "PRODPLAN_MAX_UNCOMPRESSED_MB")
    smaller = ingest({**unchanged, "PRODPLAN_MAX_UNCOMPRESSED_MB": "1"}, sample[0], run=run_cli_in_process)  # a setting
    assert_one_paragraph(smaller, sample[0], "more than the 1 MiB allowed")


# --- implausible timestamps: kept, flagged, and used for nothing ------------------------------------

IMPLAUSIBLE = {  # (sheet, header, Excel row): the cell written
    ("OrdensFabrico", "Of_DataCriacao", 5): f'<c s="{DATE_STYLE}"><v>0</v></c>',  # 1899-12-30
    ("OrdensFabrico", "Of_DataAcabamento", 6): f'<c s="{DATE_STYLE}"><v>-1</v></c>',
    ("OrdensFabrico", "Of_DataTransporte", 7): f'<c s="{DATE_STYLE}"><v>2958465</v></c>',  # 9999-12-31
    ("FasesOrdemFabrico", "FaseOf_Inicio", 5): text_cell("1850-06-01"),
    ("FasesOrdemFabrico", "FaseOf_Fim", 6): text_cell("9999-12-31 23:59:59"),
}


@pytest.fixture(scope="module")
def implausible(databases, tmp_path_factory, sample):
    book, _ = sample
    env = new_env(databases, tmp_path_factory.mktemp("home_implausible"), "badinput_implausible")

    def editor(name):
        def edit(data: Rows) -> Rows:
            for (sheet_name, header, row), cell in IMPLAUSIBLE.items():
                if sheet_name == name:
                    data[row][column_index(name, header)] = cell
            return data

        return edit

    edited = rewrite(
        book,
        tmp_path_factory.mktemp("implausible") / "implausible.xlsx",
        {name: editor(name) for name in ("OrdensFabrico", "FasesOrdemFabrico")},
    )
    keys = {(s, h, r): number_of(sheet_rows(edited, s)[r][0]) for (s, h, r) in IMPLAUSIBLE}
    outcome = ingest(env, edited)
    assert outcome.code == 0, outcome.result.stderr
    return env, {cell: int(key) for cell, key in keys.items()}


def test_implausible_timestamps_are_kept_and_flagged_by_cell(implausible):
    env, keys = implausible
    flagged = set(
        query(
            env,
            "SELECT issue_code, record_key FROM ops.data_quality_issues "
            "WHERE issue_code LIKE 'implausible_timestamp:%%'",
        )
    )
    assert flagged == {(f"implausible_timestamp:{s}.{h}", str(keys[(s, h, r)])) for (s, h, r) in IMPLAUSIBLE}
    assert query(env, "SELECT count(*) FROM quarantine.rejects r JOIN ops.ingestion_runs i USING (run_id)")[0][0] == 0
    ((kept,),) = query(
        env,
        "SELECT fase_of_fim FROM core.fases_ordem_fabrico WHERE fase_of_id = %s",
        (keys[("FasesOrdemFabrico", "FaseOf_Fim", 6)],),
    )
    assert kept == datetime(9999, 12, 31, 23, 59, 59), "kept as typed"


def test_implausible_timestamps_feed_no_duration_lead_time_or_on_time_flag(implausible):
    env, keys = implausible
    for header, row in (("FaseOf_Inicio", 5), ("FaseOf_Fim", 6)):
        assert query(
            env,
            "SELECT duration_seconds FROM core.fases_ordem_fabrico WHERE fase_of_id = %s",
            (keys[("FasesOrdemFabrico", header, row)],),
        ) == [(None,)]
    for header, row, column in (
        ("Of_DataCriacao", 5, "lead_time_seconds"),
        ("Of_DataAcabamento", 6, "lead_time_seconds"),
        ("Of_DataTransporte", 7, "is_on_time"),
    ):
        assert query(
            env, f"SELECT {column} FROM core.ordens_fabrico WHERE of_id = %s", (keys[("OrdensFabrico", header, row)],)
        ) == [(None,)], header
    # and no aggregate holds a 7,985-year duration or a 121-year lead time
    ((longest,),) = query(env, "SELECT max(max_duration_seconds) FROM analytics.agg_phase_stats_daily")
    assert longest < 10 * 365 * 86400
    ((slowest,),) = query(env, "SELECT max(p90_lead_time_seconds) FROM analytics.agg_order_stats_daily")
    assert slowest < 10 * 365 * 86400


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, 3], 3),
        ([1] + [None] * 5_000, 1),  # past several growing windows
        ([None] * 3_000 + [7] + [None] * 700, 3_001),
        ([None] * 10_000, 0),
        ([1] * 200 + [None] * 63, 200),  # the empty tail just inside the first window
        ([1] * 200 + [None] * 64, 200),  # ... and just outside it
    ],
)
def test_the_last_data_row_is_found_however_long_the_empty_tail(values, expected):
    """The reader looks for the last row holding a value from the end, in growing windows; a
    row of only spaces (as "" cells are) holds none."""
    import pyarrow as pa

    from prodplan_pipeline.workbook.reader import _data_rows

    numbers = pa.array(values, pa.float64())
    texts = pa.array(["  " if v is None and i % 2 else None for i, v in enumerate(values)], pa.string())
    assert _data_rows(pa.record_batch([numbers, texts], names=["n", "t"])) == expected
