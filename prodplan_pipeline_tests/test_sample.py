"""The synthetic workbook generator and the streaming xlsx writer (no database needed).

The workbook is generated once per module at a small scale and read back with openpyxl (a
different reader than the writer) and fastexcel/calamine (the pipeline's reader).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import Counter, defaultdict
from itertools import pairwise

import fastexcel
import numpy as np
import openpyxl
import pytest

from prodplan_pipeline import contract
from prodplan_pipeline.contract import NULL_TEXT, ColumnType
from prodplan_pipeline.workbook import xlsx_writer as xw
from prodplan_pipeline.workbook.sample import write_sample

SCALE = 0.02
SEED = 7

# Ranges the sample at SCALE must fall in (the real export's figure in the comment).
PRODUCT_MATCH_RANGE = (0.65, 0.80)  # distinct Of_ProdutoId in Modelos: 72.5%
LINK_MATCH_RANGE = (0.28, 0.37)  # distinct FuncionarioFaseOf_FaseOfId that are FaseOf_Id: 32.3%
LINK_ROWS_PER_ID_RANGE = (1.10, 1.26)  # rows per distinct FaseOfId: 1.18
CHEFE_RANGE = (0.06, 0.14)  # Chefe = 1: ~10%
OPEN_ORDER_RANGE = (0.025, 0.06)  # Of_DataAcabamento NULL: 4.2%
TRANSPORT_NULL_RANGE = (0.06, 0.15)  # Of_DataTransporte NULL: 10.6%
ROWS_PER_ORDER_RANGE = (16.0, 22.0)  # phase rows per order: ~19
OPEN_PHASE_RANGE = (0.0015, 0.0045)  # FaseOf_Fim NULL: 0.28% of phase rows
INVERTED_PHASE_RANGE = (0.003, 0.008)  # Fim < Inicio: 0.52%
ORPHAN_PHASE_ROW_RANGE = (0.0005, 0.006)  # rows of orders missing from OrdensFabrico: 0.22%
RETORNO_RANGE = (0.08, 0.12)  # FaseOf_Retorno = 1: 9.9%
PREVISTA_NULL_RANGE = (0.92, 0.975)  # FaseOf_DataPrevista NULL: 95%
PESO_ZERO_RANGE = (0.80, 0.90)  # FaseOf_Peso 0: 86%
COEFX_ZERO_RANGE = (0.98, 1.0)  # FaseOf_CoeficienteX 0: 99%
CULPADA_NULL_RANGE = (0.37, 0.46)  # Erro_FaseOfCulpada NULL: 41.5%
DEFECT_REPEAT_RANGE = (0.001, 0.012)  # exact repeats of a defect row: ~0.5%
FINAL_QC_DEFECT_RANGE = (0.01, 0.07)  # defects found at phase 8 (else 6): 3.5%

DESMOLDE, FINAL_QC, DELIVERED = 6, 8, 12


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "Folha_IA.xlsx"
    messages: list[str] = []
    counts = write_sample(path, scale=SCALE, seed=SEED, progress=messages.append)
    return path, counts, messages


@pytest.fixture(scope="module")
def book(generated) -> dict[str, list[tuple]]:
    """Every sheet as a list of row tuples (header first), read with openpyxl."""
    wb = openpyxl.load_workbook(generated[0], read_only=True)
    try:
        return {ws.title: list(ws.iter_rows(values_only=True)) for ws in wb.worksheets}
    finally:
        wb.close()


def records(book, name: str) -> list[dict]:
    header, *rows = book[name]
    return [dict(zip(header, row, strict=True)) for row in rows]


def null(value) -> bool:
    return value == NULL_TEXT


def rate(part: int, whole: int) -> float:
    return part / whole if whole else float("nan")


def within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


@pytest.fixture(scope="module")
def orders(book):
    return {r["Of_Id"]: r for r in records(book, "OrdensFabrico")}


@pytest.fixture(scope="module")
def phases(book):
    return records(book, "FasesOrdemFabrico")


@pytest.fixture(scope="module")
def phase_by_id(phases):
    return {r["FaseOf_Id"]: r for r in phases}


# --- shape and cell types --------------------------------------------------------------------------


def test_sheets_headers_and_row_counts(generated, book):
    _, counts, messages = generated
    assert list(book) == [s.name for s in contract.SHEETS]
    for sheet in contract.SHEETS:
        assert book[sheet.name][0] == sheet.headers, sheet.name
        assert len(book[sheet.name]) - 1 == counts[sheet.name], sheet.name
    assert list(counts) == [s.name for s in contract.SHEETS]
    assert any("done" in m for m in messages)


def test_catalogue_sheets_are_full_size(generated):
    counts = generated[1]
    assert counts["Funcionarios"] == 902 and counts["FuncionariosFasesAptos"] == 902
    assert counts["Fases"] == 71 and counts["Modelos"] == 894 and counts["FasesStandardModelos"] == 15_347


def test_transactional_sheets_scale(generated):
    counts = generated[1]
    assert counts["OrdensFabrico"] == round(27_380 * SCALE)
    assert counts["FuncionariosFaseOrdemFabrico"] == round(423_769 * SCALE)
    assert counts["OrdemFabricoErros"] == round(89_836 * SCALE)
    assert within(counts["FasesOrdemFabrico"] / counts["OrdensFabrico"], ROWS_PER_ORDER_RANGE)


_PYTHON_TYPES = {
    ColumnType.INTEGER: (int,),
    ColumnType.SMALLINT: (int,),
    ColumnType.DECIMAL: (int, float),
    ColumnType.TIMESTAMP: (dt.datetime,),
    ColumnType.TEXT: (str,),
}


@pytest.mark.parametrize("sheet", contract.SHEETS, ids=lambda s: s.name)
def test_cell_types_follow_the_contract(book, sheet):
    rows = book[sheet.name][1:]
    for i, column in enumerate(sheet.columns):
        values = [row[i] for row in rows]
        nulls = sum(1 for v in values if null(v))
        if column.required:
            assert nulls == 0, f"{sheet.name}.{column.header}: NULL in a required column"
        for v in values:
            if null(v) and column.type != ColumnType.TEXT:
                continue
            assert isinstance(v, _PYTHON_TYPES[column.type]) and not isinstance(v, bool), (
                f"{sheet.name}.{column.header}: {v!r}"
            )
            if isinstance(v, float):
                assert math.isfinite(v)
            if isinstance(v, dt.datetime):
                assert v.second == 0 and v.microsecond == 0, f"{sheet.name}.{column.header}: {v}"
            if column.domain is not None:
                assert v in column.domain, f"{sheet.name}.{column.header}: {v!r} outside {column.domain}"


@pytest.mark.parametrize("sheet", [s for s in contract.SHEETS if s.key], ids=lambda s: s.name)
def test_rows_sharing_a_key_are_exact_copies(book, sheet):
    header, *rows = book[sheet.name]
    key_at = [header.index(h) for h in sheet.key]
    first: dict[tuple, tuple] = {}
    for row in rows:
        key = tuple(row[i] for i in key_at)
        assert first.setdefault(key, row) == row, f"{sheet.name}: key {key} with different rows"


def test_fastexcel_reads_the_workbook(generated):
    path, counts, _ = generated
    reader = fastexcel.read_excel(str(path))
    assert reader.sheet_names == [s.name for s in contract.SHEETS]
    for sheet in contract.SHEETS:
        loaded = reader.load_sheet_by_name(sheet.name, dtypes="string")
        assert loaded.height == counts[sheet.name]
        assert tuple(loaded.to_arrow().column_names) == sheet.headers


# --- catalogue quirks ------------------------------------------------------------------------------


def test_funcionarios_repeats_301_employees_as_exact_copies(book):
    rows = book["Funcionarios"][1:]
    assert len(rows) == 902 and len({r[0] for r in rows}) == 301 and len(set(rows)) == 301
    former = [r for r in set(rows) if r[1].startswith("z) ")]
    assert former and all(r[2] == 0 for r in former)
    assert any(r[2] == 1 for r in rows)


def test_skills_pairs_twice_and_null_inicio(book):
    rows = book["FuncionariosFasesAptos"][1:]
    assert sum(1 for r in rows if null(r[2])) == 10
    pairs = Counter((r[0], r[1]) for r in rows)
    assert sum(c - 1 for c in pairs.values()) == 8
    assert len(set(rows)) == len(rows)  # (employee, phase, Inicio) unique
    employees = {r[0] for r in book["Funcionarios"][1:]}
    assert {r[0] for r in rows} <= employees


def test_phase_catalogue(book):
    rows = {r[0]: r for r in book["Fases"][1:]}
    assert sorted(rows) == list(range(1, 72))
    assert rows[DESMOLDE][1] == "Desmolde"
    assert rows[FINAL_QC][1] == "Controlo de qualidade Final"
    assert rows[DELIVERED][1] == "Entregue"


def test_products_have_gapped_ids_and_routes(book):
    products = records(book, "Modelos")
    ids = [p["Produto_Id"] for p in products]
    assert len(set(ids)) == 894 and max(ids) - min(ids) + 1 > 894
    assert all(isinstance(p["Produto_PesoDesmolde"], (int, float)) for p in products)
    routes = book["FasesStandardModelos"][1:]
    pairs = Counter((r[0], r[1]) for r in routes)
    assert sum(c - 1 for c in pairs.values()) == 238
    assert len({(r[0], r[1], r[2]) for r in routes}) == len(routes)
    by_product = defaultdict(list)
    for r in routes:
        by_product[r[0]].append(r)
    assert set(by_product) == set(ids)
    for rows in by_product.values():
        phases = [r[1] for r in sorted(rows, key=lambda r: r[2])]
        assert DESMOLDE in phases and FINAL_QC in phases and phases[-1] == DELIVERED
    assert 25 <= len({r[1] for r in routes}) <= 40
    assert all(r[3] > 0 for r in routes)


# --- orders ------------------------------------------------------------------------------------------


def test_orders(book, orders):
    rows = list(orders.values())
    ids = [r["Of_Id"] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    open_ = [r for r in rows if null(r["Of_DataAcabamento"])]
    assert within(rate(len(open_), len(rows)), OPEN_ORDER_RANGE)
    done = [r for r in rows if not null(r["Of_DataAcabamento"])]
    assert all(r["Of_FaseId"] == DELIVERED for r in done)
    assert all(r["Of_FaseId"] != DELIVERED for r in open_)
    inverted = [r for r in done if r["Of_DataAcabamento"] < r["Of_DataCriacao"]]
    assert len(inverted) >= 1 and any(r["Of_DataAcabamento"].year == 2006 for r in inverted)
    transport_null = sum(1 for r in rows if null(r["Of_DataTransporte"]))
    assert within(rate(transport_null, len(rows)), TRANSPORT_NULL_RANGE)
    assert min(r["Of_DataCriacao"] for r in rows) >= dt.datetime(2020, 1, 1)
    assert max(r["Of_DataCriacao"] for r in rows) < dt.datetime(2026, 1, 1)


def test_distinct_product_match_rate(book, orders):
    models = {r[0] for r in book["Modelos"][1:]}
    used = {r["Of_ProdutoId"] for r in orders.values()}
    assert within(rate(len(used & models), len(used)), PRODUCT_MATCH_RANGE)


# --- phases ------------------------------------------------------------------------------------------


def test_phase_quirks(phases, orders):
    n = len(phases)
    ids = [r["FaseOf_Id"] for r in phases]
    assert all(a <= b for a, b in pairwise(ids))  # increasing; equal only for exact copies
    assert (max(ids) - min(ids)) > 3 * n  # sparse ids
    assert n - len({tuple(r.values()) for r in phases}) >= 1  # exact duplicate rows
    open_rows = [r for r in phases if null(r["FaseOf_Fim"])]
    assert within(rate(len(open_rows), n), OPEN_PHASE_RANGE)
    open_orders = {i for i, r in orders.items() if null(r["Of_DataAcabamento"])}
    assert {r["FaseOf_OfId"] for r in open_rows} == open_orders  # every open order, only them
    inverted = [r for r in phases if not null(r["FaseOf_Fim"]) and r["FaseOf_Fim"] < r["FaseOf_Inicio"]]
    assert within(rate(len(inverted), n), INVERTED_PHASE_RANGE)
    orphans = [r for r in phases if r["FaseOf_OfId"] not in orders]
    assert within(rate(len(orphans), n), ORPHAN_PHASE_ROW_RANGE)
    assert {r["FaseOf_OfId"] for r in phases} >= set(orders)  # every order has phases
    assert within(rate(sum(r["FaseOf_Retorno"] == 1 for r in phases), n), RETORNO_RANGE)
    assert within(rate(sum(null(r["FaseOf_DataPrevista"]) for r in phases), n), PREVISTA_NULL_RANGE)
    assert all(null(r["FaseOf_DataPrevista"]) == null(r["FaseOf_Turno"]) for r in phases)
    assert within(rate(sum(r["FaseOf_Peso"] == 0 for r in phases), n), PESO_ZERO_RANGE)
    assert within(rate(sum(r["FaseOf_CoeficienteX"] == 0 for r in phases), n), COEFX_ZERO_RANGE)
    assert all(r["FaseOf_Coeficiente"] > 0 and r["FaseOf_Peso"] >= 0 for r in phases)


def _phases_by_order(phases) -> dict[int, list[dict]]:
    by_order = defaultdict(dict)
    for r in phases:
        by_order[r["FaseOf_OfId"]][r["FaseOf_Id"]] = r  # exact copies collapse
    return {o: sorted(rows.values(), key=lambda r: r["FaseOf_Sequencia"]) for o, rows in by_order.items()}


def test_phases_follow_the_route_in_time(book, phases, orders):
    routes = defaultdict(list)
    for r in sorted(book["FasesStandardModelos"][1:], key=lambda r: (r[0], r[2])):
        routes[r[0]].append(r[1])
    checked = 0
    for of_id, rows in _phases_by_order(phases).items():
        assert [r["FaseOf_Sequencia"] for r in rows] == list(range(1, len(rows) + 1))
        for prev, cur in pairwise(rows):
            assert cur["FaseOf_Inicio"] >= prev["FaseOf_Inicio"]
            if not null(prev["FaseOf_Fim"]) and prev["FaseOf_Fim"] >= prev["FaseOf_Inicio"]:
                assert cur["FaseOf_Inicio"] >= prev["FaseOf_Fim"], of_id  # starts after the previous ends
        order = orders.get(of_id)
        if order is None or order["Of_ProdutoId"] not in routes:
            continue
        done = [r["FaseOf_FaseId"] for r in rows if r["FaseOf_Retorno"] == 0]
        route = routes[order["Of_ProdutoId"]]
        if null(order["Of_DataAcabamento"]):
            assert done == route[: len(done)] and len(done) < len(route)
        else:
            assert done == route
            if order["Of_DataAcabamento"] >= order["Of_DataCriacao"]:
                assert order["Of_DataAcabamento"] == rows[-1]["FaseOf_Fim"]
            checked += 1
    assert checked > 100


def test_open_orders_current_phase_is_their_first_open_phase(phases, orders):
    by_order = _phases_by_order(phases)
    for of_id, order in orders.items():
        if null(order["Of_DataAcabamento"]):
            first_open = next(r for r in by_order[of_id] if null(r["FaseOf_Fim"]))
            assert order["Of_FaseId"] == first_open["FaseOf_FaseId"]


# --- employee links ----------------------------------------------------------------------------------


def test_employee_links(book, phase_by_id):
    rows = book["FuncionariosFaseOrdemFabrico"][1:]
    assert len({(r[0], r[1]) for r in rows}) == len(rows)
    distinct = {r[0] for r in rows}
    assert within(rate(len(distinct & set(phase_by_id)), len(distinct)), LINK_MATCH_RANGE)
    assert within(len(rows) / len(distinct), LINK_ROWS_PER_ID_RANGE)
    assert within(rate(sum(r[2] == 1 for r in rows), len(rows)), CHEFE_RANGE)
    employees = {r[0] for r in book["Funcionarios"][1:]}
    assert len({r[1] for r in rows} - employees) == 2


# --- defects -----------------------------------------------------------------------------------------


def test_defects_reference_real_inspection_rows(book, orders, phase_by_id):
    defects = records(book, "OrdemFabricoErros")
    n = len(defects)
    assert len({d["Erro_Descricao"] for d in defects}) >= 40
    for d in defects:
        assert d["Erro_FaseAvaliacao"] in (DESMOLDE, FINAL_QC)
        inspection = phase_by_id[d["Erro_FaseOfAvaliacao"]]
        assert inspection["FaseOf_OfId"] == d["Erro_OfId"]
        assert inspection["FaseOf_FaseId"] == d["Erro_FaseAvaliacao"]
        if not null(d["Erro_FaseOfCulpada"]):
            blamed = phase_by_id[d["Erro_FaseOfCulpada"]]
            assert blamed["FaseOf_OfId"] == d["Erro_OfId"]
            assert blamed["FaseOf_Sequencia"] < inspection["FaseOf_Sequencia"]
    assert within(rate(sum(null(d["Erro_FaseOfCulpada"]) for d in defects), n), CULPADA_NULL_RANGE)
    assert within(rate(sum(d["Erro_FaseAvaliacao"] == FINAL_QC for d in defects), n), FINAL_QC_DEFECT_RANGE)
    assert sum(d["Erro_OfId"] not in orders for d in defects) >= 1
    repeats = n - len({tuple(d.values()) for d in defects})
    assert within(rate(repeats, n), DEFECT_REPEAT_RANGE)


# --- determinism and arguments -----------------------------------------------------------------------


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(generated, tmp_path):
    path = generated[0]
    again, other = tmp_path / "again.xlsx", tmp_path / "other.xlsx"
    write_sample(again, scale=SCALE, seed=SEED)
    write_sample(other, scale=SCALE, seed=SEED + 1)
    assert _sha256(again) == _sha256(path)
    assert _sha256(other) != _sha256(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.xlsx", "other.xlsx"]  # no temp left


@pytest.mark.parametrize("scale", [0, -1, 20.5, float("nan")])
def test_bad_scale_is_refused(tmp_path, scale):
    with pytest.raises(ValueError, match="scale"):
        write_sample(tmp_path / "x.xlsx", scale=scale)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", [-1, 1.5, "7"])
def test_bad_seed_is_refused(tmp_path, seed):
    with pytest.raises(ValueError, match="seed"):
        write_sample(tmp_path / "x.xlsx", scale=0.001, seed=seed)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("link_match_rate", [0, 1.5, float("nan")])
def test_bad_link_match_rate_is_refused(tmp_path, link_match_rate):
    with pytest.raises(ValueError, match="link_match_rate"):
        write_sample(tmp_path / "x.xlsx", scale=0.001, link_match_rate=link_match_rate)
    assert list(tmp_path.iterdir()) == []


def test_link_match_rate_sets_the_share_of_links_whose_phase_exists(tmp_path):
    path = tmp_path / "matched.xlsx"
    write_sample(path, scale=0.01, link_match_rate=0.95)
    reader = fastexcel.read_excel(path)
    phases = set(reader.load_sheet("FasesOrdemFabrico").to_arrow().column("FaseOf_Id").to_pylist())
    links = set(
        reader.load_sheet("FuncionariosFaseOrdemFabrico").to_arrow().column("FuncionarioFaseOf_FaseOfId").to_pylist()
    )
    assert abs(len(links & phases) / len(links) - 0.95) < 0.01


def test_tiny_scale_still_writes_every_sheet(tmp_path):
    counts = write_sample(tmp_path / "tiny.xlsx", scale=0.0001)
    assert all(n > 0 for n in counts.values()), counts


# --- the writer alone --------------------------------------------------------------------------------


def test_writer_round_trip(tmp_path):
    path = tmp_path / "w.xlsx"
    when = np.array(["2024-01-02T03:04", "NaT", "2020-02-29T23:59"], dtype="datetime64[m]")
    kg = np.array([0.35, 8.0, np.nan])
    text = ["a <&> b", None, ' z) "x" ']
    with xw.XlsxWriter(path, ["S", "Empty"], null_text="NULL") as writer:
        with writer.sheet("S", ["When", "Kg", "Text"], [xw.DATETIME, xw.DECIMAL, xw.TEXT]) as sheet:
            sheet.write_columns([when[:2], kg[:2], text[:2]])
            sheet.write_columns([when[2:], kg[2:], text[2:]])
        with writer.sheet("Empty", ["N"], [xw.INT]):
            pass
    wb = openpyxl.load_workbook(path, read_only=True)
    assert wb.sheetnames == ["S", "Empty"]
    rows = list(wb["S"].iter_rows(values_only=True))
    assert rows == [
        ("When", "Kg", "Text"),
        (dt.datetime(2024, 1, 2, 3, 4), 0.35, "a <&> b"),
        ("NULL", 8, "NULL"),
        (dt.datetime(2020, 2, 29, 23, 59), "NULL", ' z) "x" '),
    ]
    assert list(wb["Empty"].iter_rows(values_only=True)) == [("N",)]
    wb.close()
    frame = fastexcel.read_excel(str(path)).load_sheet_by_name("S", dtypes="string").to_pandas()
    assert frame["Text"].tolist()[0] == "a <&> b"


def test_writer_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError):
        xw.XlsxWriter(tmp_path / "a.xlsx", ["bad/name"])
    with xw.XlsxWriter(tmp_path / "b.xlsx", ["A"]) as writer:
        with pytest.raises(ValueError, match="out of order"):
            writer.sheet("B", ["x"], [xw.INT])
        with writer.sheet("A", ["x"], [xw.DECIMAL]) as sheet:
            with pytest.raises(ValueError, match="infinite"):
                sheet.write_columns([np.array([np.inf])])
            with pytest.raises(ValueError, match="XML"):
                sheet.book._string_cells(["bell\x07"])


def test_each_sheet_has_its_own_generator_and_random_stream(tmp_path, monkeypatch):
    """SAMPLE_SHEETS declares every contract sheet once, each with a stream of its own: the
    contract's sheet order (which a new sheet changes) changes no sheet's rows."""
    from prodplan_pipeline.workbook import sample

    assert set(sample.SAMPLE_SHEETS) == {s.name for s in contract.SHEETS}
    streams = [spec.stream for spec in sample.SAMPLE_SHEETS.values()]
    purposes = (sample.STREAM_CATALOGUE, sample.STREAM_PLAN, sample.STREAM_PHASES, sample.STREAM_LINKS)
    assert len(set(streams)) == len(streams) and not set(streams) & {*purposes, sample.STREAM_DEFECTS}

    def rows(path) -> dict[str, list]:
        book = openpyxl.load_workbook(path, read_only=True)
        return {name: list(book[name].iter_rows(values_only=True)) for name in book.sheetnames}

    write_sample(tmp_path / "contract_order.xlsx", scale=0.005, seed=5)
    monkeypatch.setattr(contract, "SHEETS", tuple(reversed(contract.SHEETS)))
    write_sample(tmp_path / "reversed.xlsx", scale=0.005, seed=5)
    assert rows(tmp_path / "contract_order.xlsx") == rows(tmp_path / "reversed.xlsx")
