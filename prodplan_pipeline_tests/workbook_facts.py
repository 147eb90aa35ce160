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

# Each feature gate and the facts-file entry holding its relationship's match rate.
FACT_OF_GATE = {
    "kpis_by_employee": "ffo_faseofid_distinct_in_faseof_id",
    "kpis_by_product_attributes": "of_produtoid_distinct_in_modelos",
    "quality_by_phase_timing": "erro_faseofavaliacao_distinct_in_faseof_id",
    "quality_by_order": "erro_ofid_distinct_in_ordensfabrico",
    "phases_by_order": "faseof_ofid_distinct_in_ordensfabrico",
}

PHASES, ORDERS = "FasesOrdemFabrico", "OrdensFabrico"
# (child sheet, column) -> (parent sheet, column), named as in the shared facts file.
MATCH_RATES = {
    "ffo_faseofid_distinct_in_faseof_id": (
        "FuncionariosFaseOrdemFabrico",
        "FuncionarioFaseOf_FaseOfId",
        PHASES,
        "FaseOf_Id",
    ),
    "of_produtoid_distinct_in_modelos": (ORDERS, "Of_ProdutoId", "Modelos", "Produto_Id"),
    "erro_faseofavaliacao_distinct_in_faseof_id": ("OrdemFabricoErros", "Erro_FaseOfAvaliacao", PHASES, "FaseOf_Id"),
    "erro_faseofculpada_distinct_in_faseof_id": ("OrdemFabricoErros", "Erro_FaseOfCulpada", PHASES, "FaseOf_Id"),
    "ffo_funcionarioid_distinct_in_funcionarios": (
        "FuncionariosFaseOrdemFabrico",
        "FuncionarioFaseOf_FuncionarioId",
        "Funcionarios",
        "Funcionario_Id",
    ),
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
    return {
        "sheets": {s.name: _sheet_facts(frames[s.name], s) for s in SHEETS},
        "phases": _phase_facts(frames[PHASES].drop_duplicates(), frames[ORDERS]),
        "match_rates": {name: _match_rate(frames, *link) for name, link in MATCH_RATES.items()}
        | {"of_rows_produtoid_in_modelos": _row_match_rate(frames)},
    }


def _sheet_facts(frame: pd.DataFrame, s) -> dict:
    facts = {
        "rows": len(frame),
        "columns": list(frame.columns),
        "exact_duplicate_rows": int(frame.duplicated().sum()),
        "null_text": {c: int(frame[c].isna().sum()) for c in frame.columns},
    }
    if s.key is not None:
        distinct = len(frame.drop_duplicates(subset=list(s.key)))
        facts |= {"key": list(s.key), "distinct_keys": distinct, "rows_beyond_distinct_key": len(frame) - distinct}
    return facts


def _phase_facts(phases: pd.DataFrame, orders: pd.DataFrame) -> dict:
    """Over the distinct phase rows, which are the ones that reach core."""
    return {
        "fim_lt_inicio_rows": int((phases.FaseOf_Fim < phases.FaseOf_Inicio).sum()),
        "open_phases_fim_null": int(phases.FaseOf_Fim.isna().sum()),
        "orphan_ofid_rows": int((~phases.FaseOf_OfId.isin(orders.Of_Id)).sum()),
    }


def _match_rate(frames, child: str, column: str, parent: str, parent_column: str) -> dict:
    values = pd.Series(frames[child][column].dropna().unique())
    numerator = int(values.isin(frames[parent][parent_column]).sum())
    return _rate(numerator, len(values))


def _row_match_rate(frames) -> dict:
    products = frames[ORDERS].Of_ProdutoId
    return _rate(int(products.isin(frames["Modelos"].Produto_Id).sum()), len(products))


def _rate(numerator: int, denominator: int) -> dict:
    return {
        "numerator": numerator,
        "denominator": denominator,
        "rate": round(numerator / denominator, 6) if denominator else None,
    }


# --- the planner's figures, as of the export's own time -----------------------------------------

PLAUSIBLE = (pd.Timestamp("1990-01-01"), pd.Timestamp("2100-01-01"))  # the data contract's window
REASONS_CULPRIT = ("no_culprit_given", "culprit_phase_row_missing")


def _timestamps(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column, errors="coerce")


def _plausible(column: pd.Series) -> pd.Series:
    return column.ge(PLAUSIBLE[0]) & column.lt(PLAUSIBLE[1])


def _phases(frames) -> pd.DataFrame:
    """The distinct phase rows (the ones that reach core), with typed times."""
    phases = frames[PHASES].drop_duplicates().copy()
    phases["start"], phases["end"] = _timestamps(phases.FaseOf_Inicio), _timestamps(phases.FaseOf_Fim)
    return phases


def data_as_of(frames) -> pd.Timestamp:
    """The newest plausible phase start or end."""
    phases = _phases(frames)
    return max(phases.start[_plausible(phases.start)].max(), phases.end[_plausible(phases.end)].max())


def phase_flow(frames) -> dict[int, dict]:
    """Per phase id: wip, finished in the 30 days up to data_as_of, p90 age of the wip (seconds)."""
    phases, now = _phases(frames), data_as_of(frames)
    wip = _plausible(phases.start) & (phases.start <= now) & (phases.end.isna() | (phases.end > now))
    finished = (phases.end > now - pd.Timedelta(days=30)) & (phases.end <= now)
    flow = {}
    for phase, rows in phases.groupby("FaseOf_FaseId"):
        in_progress, done = rows[wip.loc[rows.index]], int(finished.loc[rows.index].sum())
        if len(in_progress) or done:
            ages = (now - in_progress.start).dt.total_seconds()
            flow[int(phase)] = {
                "wip": len(in_progress),
                "finished_30d": done,
                "p90_wip_age_seconds": float(ages.quantile(0.9)) if len(ages) else None,
            }
    return flow


def defect_keys(frames) -> pd.DataFrame:
    """Each defect row with its Pareto keys (or why a key is unknown) and its day."""
    defects, phases, orders = frames["OrdemFabricoErros"].copy(), _phases(frames), frames[ORDERS].copy()
    phase_of = phases.set_index("FaseOf_Id")
    culprit = defects.Erro_FaseOfCulpada
    defects["culprit_phase"] = culprit.map(phase_of.FaseOf_FaseId)
    defects["culprit_reason"] = None
    defects.loc[culprit.notna() & defects.culprit_phase.isna(), "culprit_reason"] = REASONS_CULPRIT[1]
    defects.loc[culprit.isna(), "culprit_reason"] = REASONS_CULPRIT[0]
    order_of = orders.set_index("Of_Id")
    defects["product"] = defects.Erro_OfId.map(order_of.Of_ProdutoId)
    defects["product_reason"] = defects["product"].isna().map({True: "order_missing", False: None})
    # the defect's time: its inspection phase row's, else its order's finish, else its creation
    inspected = phase_of.end.fillna(phase_of.start)
    candidates = [
        defects.Erro_FaseOfAvaliacao.map(inspected),
        defects.Erro_OfId.map(_timestamps(order_of.Of_DataAcabamento)),
        defects.Erro_OfId.map(_timestamps(order_of.Of_DataCriacao)),
    ]
    day = pd.Series(pd.NaT, index=defects.index)
    for candidate in candidates:
        day = day.fillna(candidate.where(_plausible(candidate)))
    defects["day"] = day.dt.date
    return defects


def orders_at_risk(frames) -> tuple[dict[int, float], dict[str, int]]:
    """{of_id: slack seconds} of the assessed open orders with a due date; unassessed per reason."""
    now, phases, orders = data_as_of(frames), _phases(frames), frames[ORDERS].copy()
    orders["due"], orders["finish"] = _timestamps(orders.Of_DataTransporte), _timestamps(orders.Of_DataAcabamento)
    open_due = orders[orders.finish.isna() & orders.due.notna()]
    route = frames["FasesStandardModelos"].groupby("ProdutoFase_ProdutoId").ProdutoFase_FaseId.apply(set)
    done = phases[phases.end.notna()].groupby("FaseOf_OfId").FaseOf_FaseId.apply(set)
    timed = phases[
        (phases.end >= phases.start)
        & _plausible(phases.start)
        & _plausible(phases.end)
        & (phases.end > now - pd.DateOffset(years=1))
        & (phases.end <= now)
    ].copy()
    timed["seconds"] = (timed.end - timed.start).dt.total_seconds()
    timed["product"] = timed.FaseOf_OfId.map(orders.set_index("Of_Id").Of_ProdutoId)
    by_product = timed.groupby(["product", "FaseOf_FaseId"]).seconds.median()
    by_phase = timed.groupby("FaseOf_FaseId").seconds.median()
    slack, unassessed = {}, {}
    for order in open_due.itertuples():
        reason, total = None, 0.0
        if not _plausible(pd.Series([order.due])).iloc[0]:
            reason = "due_date_implausible"
        elif order.Of_ProdutoId not in route.index:
            reason = "no_route"
        else:
            for phase in route[order.Of_ProdutoId] - done.get(order.Of_Id, set()):
                expected = by_product.get((order.Of_ProdutoId, phase), by_phase.get(phase))
                if expected is None or pd.isna(expected):
                    reason = "no_duration_history"
                    break
                total += expected
        if reason:
            unassessed[reason] = unassessed.get(reason, 0) + 1
        else:
            slack[int(order.Of_Id)] = (order.due - (now + pd.Timedelta(seconds=total))).total_seconds()
    return slack, unassessed
