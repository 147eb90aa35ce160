"""Facts about a workbook computed from the file alone, the kinds the shared sample's facts file holds.

The tests about the real export compare the warehouse with these: on the real sample when it is
there, on a generated workbook otherwise, so the same assertions bind on every machine. Nothing
here uses the pipeline's reader, its SQL or the generator's parameters: pandas reads the file
(calamine by default, openpyxl to cross-check) and counts. The sheet keys are the data
contract's, the one thing taken from the project (they are the spec, not an implementation).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from prodplan_pipeline.contract import SHEETS

PHASES, ORDERS = "FasesOrdemFabrico", "OrdensFabrico"
# (child sheet, column) -> (parent sheet, column), named as in the shared facts file.
MATCH_RATES = {
    "ffo_faseofid_distinct_in_faseof_id":
        ("FuncionariosFaseOrdemFabrico", "FuncionarioFaseOf_FaseOfId", PHASES, "FaseOf_Id"),
    "of_produtoid_distinct_in_modelos": (ORDERS, "Of_ProdutoId", "Modelos", "Produto_Id"),
    "erro_faseofavaliacao_distinct_in_faseof_id":
        ("OrdemFabricoErros", "Erro_FaseOfAvaliacao", PHASES, "FaseOf_Id"),
    "erro_faseofculpada_distinct_in_faseof_id":
        ("OrdemFabricoErros", "Erro_FaseOfCulpada", PHASES, "FaseOf_Id"),
    "ffo_funcionarioid_distinct_in_funcionarios":
        ("FuncionariosFaseOrdemFabrico", "FuncionarioFaseOf_FuncionarioId", "Funcionarios", "Funcionario_Id"),
    "erro_ofid_distinct_in_ordensfabrico": ("OrdemFabricoErros", "Erro_OfId", ORDERS, "Of_Id"),
    "faseof_ofid_distinct_in_ordensfabrico": (PHASES, "FaseOf_OfId", ORDERS, "Of_Id"),
}


def read_frames(path: Path, engine: str = "calamine") -> dict[str, pd.DataFrame]:
    """Every sheet as pandas reads it (the text ``NULL`` is one of pandas' default NA values)."""
    frames = pd.read_excel(path, sheet_name=None, engine=engine)
    # Readers differ in whole numbers (1 vs 1.0): compare values, not their Python types.
    return {name: frame.apply(_numeric_if_whole) for name, frame in frames.items()}


def _numeric_if_whole(column: pd.Series) -> pd.Series:
    if column.dtype == object:
        converted = pd.to_numeric(column, errors="coerce")
        if converted.notna().sum() == column.notna().sum():
            return converted
    return column


def compute_facts(frames: dict[str, pd.DataFrame]) -> dict:
    return {"sheets": {s.name: _sheet_facts(frames[s.name], s) for s in SHEETS},
            "phases": _phase_facts(frames[PHASES].drop_duplicates(), frames[ORDERS]),
            "match_rates": {name: _match_rate(frames, *link) for name, link in MATCH_RATES.items()}
            | {"of_rows_produtoid_in_modelos": _row_match_rate(frames)}}


def _sheet_facts(frame: pd.DataFrame, s) -> dict:
    facts = {"rows": len(frame), "columns": list(frame.columns),
             "exact_duplicate_rows": int(frame.duplicated().sum()),
             "null_text": {c: int(frame[c].isna().sum()) for c in frame.columns}}
    if s.key is not None:
        distinct = len(frame.drop_duplicates(subset=list(s.key)))
        facts |= {"key": list(s.key), "distinct_keys": distinct,
                  "rows_beyond_distinct_key": len(frame) - distinct}
    return facts


def _phase_facts(phases: pd.DataFrame, orders: pd.DataFrame) -> dict:
    """Over the distinct phase rows, which are the ones that reach core."""
    return {"fim_lt_inicio_rows": int((phases.FaseOf_Fim < phases.FaseOf_Inicio).sum()),
            "open_phases_fim_null": int(phases.FaseOf_Fim.isna().sum()),
            "orphan_ofid_rows": int((~phases.FaseOf_OfId.isin(orders.Of_Id)).sum())}


def _match_rate(frames, child: str, column: str, parent: str, parent_column: str) -> dict:
    values = pd.Series(frames[child][column].dropna().unique())
    numerator = int(values.isin(frames[parent][parent_column]).sum())
    return _rate(numerator, len(values))


def _row_match_rate(frames) -> dict:
    products = frames[ORDERS].Of_ProdutoId
    return _rate(int(products.isin(frames["Modelos"].Produto_Id).sum()), len(products))


def _rate(numerator: int, denominator: int) -> dict:
    return {"numerator": numerator, "denominator": denominator,
            "rate": round(numerator / denominator, 6) if denominator else None}
