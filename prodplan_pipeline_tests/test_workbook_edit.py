"""The tests' workbook editor (``workbook_edit.edited``) writes what openpyxl writes for the same
edit, read back by pandas, and leaves every sheet the edit did not open byte for byte."""

from __future__ import annotations

import datetime as dt
import zipfile

import openpyxl
import pytest

from prodplan_pipeline.workbook.inspect import inspect_workbook
from prodplan_pipeline.workbook.sample import write_sample
from prodplan_pipeline_tests.workbook_edit import edited, header_index
from prodplan_pipeline_tests.workbook_facts import read_frames


def every_kind_of_edit(book) -> None:
    phases = book["FasesOrdemFabrico"]
    inicio, fim = header_index(phases, "FaseOf_Inicio") - 1, header_index(phases, "FaseOf_Fim") - 1
    for row in list(phases.iter_rows(min_row=2))[:50]:  # dates moved, one end cleared
        if isinstance(row[inicio].value, dt.datetime):
            row[fim].value = row[inicio].value + dt.timedelta(days=2, hours=3, minutes=7)
    phases.cell(3, fim + 1).value = None
    phases.delete_rows(10, 25)
    models = book["Modelos"]
    models.cell(2, header_index(models, "Produto_Nome")).value = 'renamed & <quoted "ERP">'
    book["Fases"]["B2"].value = "Laminagem (renamed)"
    routes = book["FasesStandardModelos"]
    routes.cell(2, header_index(routes, "ProdutoFase_Coeficiente")).value = "not a number"
    defects = book["OrdemFabricoErros"]
    defects.delete_rows(defects.max_row - 4, 5)


def test_an_edit_gives_openpyxls_workbook_and_copies_what_it_did_not_open(tmp_path):
    source = tmp_path / "source.xlsx"
    write_sample(source, scale=0.005, seed=2)
    fast = edited(source, tmp_path / "fast.xlsx", every_kind_of_edit)
    book = openpyxl.load_workbook(source)
    every_kind_of_edit(book)
    book.save(slow := tmp_path / "slow.xlsx")
    ours, theirs, before = read_frames(fast), read_frames(slow), read_frames(source)
    assert list(ours) == list(theirs)
    for name in ours:
        assert ours[name].equals(theirs[name]), name
    assert len(ours["FasesOrdemFabrico"]) == len(before["FasesOrdemFabrico"]) - 25
    assert not ours["Modelos"].equals(before["Modelos"]), "the edit is there"
    parts = inspect_workbook(source).sheet_parts
    with zipfile.ZipFile(source) as a, zipfile.ZipFile(fast) as b:
        for name in ("OrdensFabrico", "Funcionarios", "FuncionariosFaseOrdemFabrico"):
            assert a.read(parts[name]) == b.read(parts[name]), f"{name} was not opened: copied as it was"


def test_a_workbook_it_cannot_read_faithfully_is_refused(tmp_path):
    book = openpyxl.Workbook()  # openpyxl's own layout (cell references, inline strings): not read
    book.active.title = "Fases"
    book.active.append(["Fase_Id", "Fase_Nome"])
    book.active.append([1, "Corte"])
    book.save(foreign := tmp_path / "foreign.xlsx")
    with pytest.raises(ValueError, match="not a workbook of xlsx_writer's"):
        edited(foreign, tmp_path / "out.xlsx", lambda b: setattr(b["Fases"]["B2"], "value", "x"))
