"""The synthetic ``Folha_IA`` workbook: the real export's shape, sizes and quirks, made up.

``write_sample(path, scale, seed)`` writes the nine sheets of ``contract.SHEETS`` (names,
headers, column order and cell types all come from the contract). Scale 1 is the size of the
real export (~1.1 M data rows); the catalogue sheets (Funcionarios, FuncionariosFasesAptos,
Fases, Modelos, FasesStandardModelos) are full size at every scale, like the real 10% sample;
the transactional sheets scale linearly.

How it is built (deterministic: numpy ``default_rng`` streams keyed by (seed, purpose, chunk)):

1. A catalogue (phases, products and their standard routes, employees) and an order plan
   (ids, creation dates, products, which orders are open / missing from OrdensFabrico / ...).
2. Order phases are generated per chunk of orders, vectorised. A chunk can be regenerated
   identically from its own random stream, so the phase rows are generated again for each
   sheet that needs them (OrdensFabrico's finish dates, the phase sheet, the employee links,
   the defects) instead of being held in memory: memory stays bounded at any scale.
3. Everything streams into ``xlsx_writer`` one chunk at a time, into a temporary file that is
   renamed over ``path`` only when complete.

Quirk rates are named constants below, each with the real figure it reproduces. Notes:
- the real export has one order finishing in 2006; here the first of the 7*scale orders that
  finish before they were created always finishes in 2006 (at least one such order at any scale);
- the distinct product-id match rate is kept near the real 72.5% at every scale (the number
  of unknown product ids follows the number of distinct known ids actually used);
- Funcionarios repeats each employee row once per skill row (as the real export does: it
  looks joined with the skills), copies adjacent; 301 employees, 902 rows;
- FasesOrdemFabrico rows are not a fixed quota: ~18.8 per order (515,336 at scale 1, real
  519,079); the other transactional sheets get exactly round(real count x scale) rows;
- byte-identical output holds for the same numpy and zlib versions; a sheet is written with
  ZIP64 only when its XML may pass 1 GiB (the phase sheet from scale ~6), see xlsx_writer.

Speed (2-core machine): scale 1 in ~6 s with ~150 MB peak RSS; scale 20 in ~2.5 min, ~200 MB.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prodplan_pipeline import contract
from prodplan_pipeline.contract import ColumnType
from prodplan_pipeline.workbook import xlsx_writer as xw

# --- Sizes of the real full export (scale 1) ----------------------------------------------------
ORDERS_AT_SCALE_1 = 27_380
EMPLOYEE_LINKS_AT_SCALE_1 = 423_769  # FuncionariosFaseOrdemFabrico rows
DEFECTS_AT_SCALE_1 = 89_836  # OrdemFabricoErros rows
MIN_ORDERS = 10  # tiny scales still get a few rows in every sheet
MIN_LINKS = 5
MIN_DEFECTS = 5
MAX_SCALE = 20.0
N_PRODUCTS = 894  # Modelos rows
N_ROUTE_ROWS = 15_347  # FasesStandardModelos rows
ROUTE_PAIR_REPEATS = 238  # (product, phase) repeats in FasesStandardModelos
N_EMPLOYEES = 301  # distinct Funcionario_Id
N_EMPLOYEE_ROWS = 902  # Funcionarios rows (601 exact copies) = FuncionariosFasesAptos rows
SKILL_PAIRS_TWICE = 8  # (employee, phase) pairs with two different Inicio
SKILL_NULL_INICIO = 10  # FuncionariosFasesAptos rows with Inicio = NULL
UNKNOWN_EMPLOYEES = 2  # employee ids in FuncionariosFaseOrdemFabrico missing from Funcionarios

# --- Order quirks ---------------------------------------------------------------------------------
OPEN_ORDER_RATE = 1_156 / 27_380  # Of_DataAcabamento NULL
TRANSPORT_NULL_RATE = 286 / 2_709  # Of_DataTransporte NULL (sample: 10.6%)
TRANSPORT_LATE_RATE = 0.15  # shipping date before the finish day: not on time
INVERTED_ORDERS_PER_SCALE = 7  # orders finishing before they were created (one in 2006)
PRODUCT_MATCH_RATE = 894 / (894 + 339)  # distinct Of_ProdutoId found in Modelos: 72.5%
ORPHAN_ORDERS_PER_UNKNOWN_ID = 387 / 339  # 387 orders reference 339 unknown product ids
FILL_UNUSED_PRODUCTS_MAX = 20  # at scale ~1 every model is ordered (real: all 894 used)
MISSING_ORDER_RATE = 6 / 2_715  # orders with phase rows but absent from OrdensFabrico (0.22%)
MIDNIGHT_CREATION_RATE = 0.75  # the ERP mostly stores a creation date without time
OPEN_WAITING_FIRST_PHASE = 52 / 118  # open orders still at their first phase (sample)
OPEN_IN_WAREHOUSE = 38 / 118  # open orders sitting in the warehouse phase (sample)

# --- Phase-row quirks ------------------------------------------------------------------------------
REWORK_EPISODES_PER_ORDER = 1.35  # -> FaseOf_Retorno = 1 in ~9.9% of rows (4,956 / 50,153)
REWORK_BLOCK_P = (0.65, 0.25, 0.10)  # a rework pass redoes 1, 2 or 3 phases
SECOND_OPEN_PHASE_RATE = 140 / 118 - 1  # 140 open phases on 118 open orders
INVERTED_PHASE_RATE = 261 / 50_153  # Fim < Inicio (0.52%)
DUPLICATE_PHASE_ROW_RATE = 4 / 50_153  # exact duplicate rows (at least one at any scale)
PLANNING_START = "2025-06-01"  # DataPrevista/Turno are filled mostly on recent phases ...
PLANNED_RECENT_P = 0.70  # ... so that DataPrevista is NULL in ~95% (47,614 / 50,153)
PLANNED_OLD_P = 0.004
COEFX_NONZERO_RATE = 1 - 49_678 / 50_153  # FaseOf_CoeficienteX is 0 in 99%
PESO_RECORDED_P = 0.9  # weighed phases record kg -> Peso 0 in ~86% (43,062 / 50,153)
ID_GAP_MEAN = 4.0  # FaseOf_Id spread over ~4x the row count (sample 1,955,179..3,932,844)
FIRST_PHASE_ID = 1_900_001

# --- Employee links and defects --------------------------------------------------------------------
LINK_ROWS_PER_ID = 42_157 / 35_704  # ~1.18 employees per FuncionarioFaseOf_FaseOfId
LINK_ID_MATCH_RATE = 11_519 / 35_704  # 32.3% of distinct FaseOfId exist as FaseOf_Id
CHEFE_RATE = 0.10
UNKNOWN_EMPLOYEE_ROW_RATE = 0.0005
DEFECT_FINAL_QC_SHARE = 310 / 8_857  # Erro_FaseAvaliacao 8 (else 6, Desmolde)
DEFECT_CULPADA_NULL_RATE = 37_303 / 89_836  # Erro_FaseOfCulpada NULL (41.5%)
DEFECT_SEVERITY_P = (7_396 / 8_857, 1_291 / 8_857, 170 / 8_857)  # OFCH_GRAVIDADE 1/2/3
DEFECT_ROWS_MISSING_ORDERS_PER_SCALE = 9  # defect rows of orders absent from OrdensFabrico
DEFECT_MISSING_ORDERS_PER_SCALE = 5  # ... on 5 orders
DEFECT_REPEAT_RATE = 0.005  # genuine exact repeats of a defect row
DEFECT_OVERDISPERSION = 0.6  # gamma shape: some inspections find many defects

# --- Time -----------------------------------------------------------------------------------------
FIRST_CREATED = "2020-01-01"
LAST_CREATED = "2025-11-30"
EXPORT_TIME = "2025-12-12T00:00"  # nothing happens after the export
YEAR_2006_FINISH = "2006-03-14T10:20"  # the real export's order finishing in 2006
WAIT_MEDIAN_MIN = 360.0  # wait before a phase: lognormal, median 6 h
WAIT_SIGMA = 1.1
STALL_RATE = 0.03  # occasionally a phase waits 3-25 days
DURATION_SIGMA = 0.45  # phase duration ~ coefficient hours x lognormal
SKILLS_SYSTEM_START = "2016-07-05"  # many skills were registered when the system started

ZIP64_ABOVE_BYTES = 1 << 30  # a sheet whose XML may exceed this is written with ZIP64 (2 GiB limit)
XML_BYTES_PER_CELL = 30  # ~271 bytes per 12-cell phase row, measured
CHUNK_ORDERS = 2_500  # orders per generation chunk (~47k phase rows)
WRITE_ROWS = 50_000  # rows formatted at once: bounds the memory of one-piece sheets
PROGRESS_EVERY = 100_000
DESMOLDE, FINAL_QC, DELIVERED = 6, 8, 12
INSPECTION_PHASES = (DESMOLDE, FINAL_QC)
# Random streams by purpose (a sheet's own stream is its SAMPLE_SHEETS entry's): fixed numbers.
STREAM_CATALOGUE, STREAM_PLAN, STREAM_PHASES, STREAM_LINKS, STREAM_DEFECTS = 0, 1, 2, 3, 4

# Phase catalogue, Fase_Id = position + 1: (Fase_Nome, Fase_Sequencia, DeProducao, Automatica).
PHASES = (
    ("Laminagem", 10, 1, 0),
    ("Cura", 11, 1, 1),
    ("Corte", 13, 1, 0),
    ("Colagem Cascos", 14, 1, 0),
    ("Pintura Acabamento", 16, 1, 0),
    ("Desmolde", 12, 1, 0),
    ("Parque Acabamento", 17, 0, 1),
    ("Controlo de qualidade Final", 29, 1, 0),
    ("Armazém", 30, 0, 1),
    ("Embalagem", 36, 0, 1),
    ("Aguarda Laminagem", 1, 1, 1),
    ("Entregue", 37, 0, 1),
    ("Para Reparar", 38, 0, 0),
    ("Em Reparação", 31, 1, 0),
    ("Em Uso", 35, 0, 0),
    ("Para Abate", 42, 0, 0),
    ("Abatido", 43, 0, 0),
    ("Gelcoat", 9, 1, 0),
    ("Pintura de Molde", 9, 1, 0),
    ("CNC", 5, 1, 0),
    ("Preparação", 7, 1, 0),
    ("Lixagem a Seco", 19, 1, 0),
    ("Desenho CAD", 2, 0, 0),
    ("Programação CAM", 3, 0, 0),
    ("Preparação CNC", 4, 0, 0),
    ("Acabamento CNC", 6, 0, 0),
    ("Corte de Peças", 13, 1, 0),
    ("Soldadura", 44, 0, 0),
    ("Montagem de Estruturas", 45, 0, 0),
    ("Lacagem", 46, 0, 0),
    ("Pendente", 0, 1, 1),
    ("Acabamento II", 20, 1, 0),
    ("Acabamento III", 21, 1, 0),
    ("Laminagem de Peças", 10, 1, 0),
    ("Logística / Expedição", 47, 0, 1),
    ("Acabamento de Moldes", 32, 1, 0),
    ("Serviço Exterior", 0, 0, 0),
    ("Lixagem a Água", 25, 1, 0),
    ("Polimento", 26, 1, 0),
    ("Serralharia", 48, 0, 0),
    ("Multitarefa", 49, 0, 0),
    ("Manutenção Geral", 39, 1, 0),
    ("Montagem / Finalização", 28, 1, 0),
    ("Colagem de Golas", 15, 1, 0),
    ("Corte e Costura", 41, 1, 0),
    ("Armazém 2ª Escolha", 33, 0, 1),
    ("Resíduos", 34, 0, 1),
    ("Preparação de Molde", 8, 1, 0),
    ("Escritório", 50, 0, 0),
    ("Colagem de Peças", 14, 1, 0),
    ("Laminagem Double Dutch", 10, 1, 0),
    ("Ordem de Venda", 0, 0, 0),
    ("Submetido", 1, 0, 0),
    ("Em Avaliação", 2, 0, 0),
    ("Avaliado", 3, 0, 0),
    ("Aprovado", 4, 0, 0),
    ("Rejeitado", 5, 0, 0),
    ("Preparação de Acabamento", 22, 1, 0),
    ("Acabamento - Pintura", 23, 1, 0),
    ("Acabamento - Verniz", 24, 1, 0),
    ("Laminagem por Infusão", 10, 1, 0),
    ("Lixagem de Peças", 25, 1, 0),
    ("Acabamento de Peças", 24, 1, 0),
    ("Preparação de Tecidos", 40, 1, 0),
    ("Rotomoldagem", 1, 1, 0),
    ("Reutilizado", 2, 0, 1),
    ("Verniz", 9, 0, 0),
    ("Controlo de qualidade Montagem", 27, 1, 0),
    ("Impressão 3D", 42, 1, 0),
    ("Reparação de Verniz", 31, 1, 0),
    ("Injeção", 1, 1, 0),
)

# The standard route, in order: (Fase_Id, share of products whose route has it, base
# coefficient in standard hours). 35 phases; probability 1 = in every route.
ROUTE_TEMPLATE = (
    (11, 1.00, 1.5),
    (48, 0.98, 1.5),
    (18, 0.98, 1.5),
    (1, 0.92, 8.0),
    (34, 0.03, 2.0),
    (61, 0.08, 6.0),
    (51, 0.02, 8.0),
    (65, 0.01, 4.0),
    (2, 0.98, 1.5),
    (6, 1.00, 0.5),
    (3, 1.00, 1.0),
    (20, 0.02, 1.0),
    (27, 0.03, 0.75),
    (4, 0.25, 1.5),
    (44, 0.13, 1.0),
    (50, 0.70, 1.25),
    (45, 0.02, 1.0),
    (5, 0.60, 1.5),
    (22, 0.62, 1.5),
    (32, 0.36, 1.5),
    (33, 0.02, 1.5),
    (58, 0.05, 1.0),
    (59, 0.05, 2.0),
    (60, 0.05, 2.0),
    (38, 0.63, 1.5),
    (39, 0.90, 1.0),
    (62, 0.02, 1.0),
    (63, 0.02, 1.0),
    (14, 0.02, 1.0),
    (68, 0.60, 0.25),
    (43, 1.00, 1.5),
    (8, 1.00, 1.5),
    (9, 1.00, 1.5),
    (10, 0.99, 1.5),
    (12, 1.00, 1.5),
)
# Phases a route may hold twice (weights): Corte mostly, as in the real routes.
REPEATABLE_PHASES = {3: 0.70, 1: 0.08, 61: 0.04, 32: 0.04, 5: 0.04, 22: 0.03, 38: 0.03, 39: 0.02, 43: 0.02}
COEF_JITTER = (0.0, 0.0, 0.0, 0.0, 0.25, -0.25, 0.5, 1.25)
COEFX_VALUES = (0.5, 0.75, 1.0, 6.0, 0.666666667, 1.111111111, 1.071428571, 1.25)
ROUTE_COEFX_ZERO_RATE = 0.6
WEIGHED_AT_DEMOULD = (6,)  # Peso = mould-release weight
WEIGHED_FINISHED = (43, 8)  # Peso = finished weight
SKILL_PHASES = (1, 38, 32, 39, 22, 5, 43, 14, 3, 58, 70, 4, 8, 59, 18, 34, 33, 50, 6, 2, 48, 61, 68, 44, 60)

# Defect names by inspection phase (57 in all).
DEFECTS_AT_DEMOULD = (
    "Molde com deformações",
    "Molde baço",
    "Laminagem com bolhas",
    "Interior enrugado",
    "Laminagem contraída",
    "Laminagem deslaminada",
    "Interior esbranquiçado",
    "Molde com sujidade",
    "Danos no desmolde",
    "Interior mal impregnado",
    "Emenda descolada",
    "Gelcoat danificado no desmolde",
    "Laminagem com perda de vácuo",
    "Molde desalinhado",
    "Resina mal misturada",
    "Laminagem mal impregnada",
    "Falta de fibra",
    "Laminagem mal compactada",
    "Zona de colagem danificada",
    "Plástico de vácuo colado",
    "Absorvente colado",
    "Gelcoat com bolhas",
    "Gelcoat fino",
    "Gelcoat estalado",
    "Gelcoat com poros",
    "Molde riscado",
    "Laminagem com rugas",
    "Laminagem com excesso de resina",
    "Laminagem com sobreposição de tecidos",
    "Fibra exposta",
    "Interior com resina acumulada",
    "Casco rachado no desmolde",
    "Deck rachado no desmolde",
    "Emenda irregular",
    "Resina mal curada",
    "Peça colada fora do sítio",
    "Espessura irregular",
    "Proa assimétrica",
    "Popa com vazios",
    "Bordo com falhas",
    "Tecido de peel-ply por retirar",
    "Peso acima do previsto",
)
DEFECTS_AT_FINAL_QC = (
    "Pintura transparente",
    "Pintura com linhas tortas",
    "Pintura com fios",
    "Pintura com lixo",
    "Pintura malhada",
    "Pintura com escorridos",
    "Pintura a descascar",
    "Poros na pintura",
    "Verniz baço",
    "Lixagem insuficiente",
    "Polimento com marcas",
    "Zona do cockpit suja",
    "Pintura com cor errada",
    "Ferragens mal montadas",
    "Autocolantes desalinhados",
)

# Product names: boat class (base demould kg, gelcoat kg) x model x size x construction.
BOAT_CLASSES = (
    ("K1", 8.5, 0.9),
    ("K2", 12.5, 1.1),
    ("K4", 17.5, 1.5),
    ("C1", 9.5, 1.0),
    ("C2", 13.0, 1.2),
    ("C4", 18.0, 1.5),
    ("Surf Ski", 10.0, 0.85),
    ("Ocean Ski", 10.5, 1.0),
    ("TR", 14.5, 1.4),
    ("Slalom", 6.6, 0.3),
    ("Polo", 7.0, 0.5),
    ("SUP", 11.0, 0.9),
)
MODEL_NAMES = (
    "Tejo",
    "Douro",
    "Sado",
    "Mondego",
    "Vouga",
    "Lima",
    "Minho",
    "Côa",
    "Tâmega",
    "Paiva",
    "Zêzere",
    "Guadiana",
    "Cávado",
    "Sorraia",
    "Alva",
    "Ave",
    "Neiva",
    "Ceira",
    "Sabor",
    "Tua",
    "Corgo",
    "Homem",
    "Âncora",
    "Arade",
    "Mira",
    "Vez",
    "Távora",
    "Caima",
    "Dão",
    "Lis",
)
SIZES = (("S", -0.5), ("M", 0.0), ("ML", 0.2), ("L", 0.5), ("XL", 0.8), ("XXL", 1.0))
CONSTRUCTIONS = (
    ("SCS", 1.0, True),
    ("WWR", 1.05, True),
    ("E", 0.9, False),
    ("F", 0.95, True),
    ("G", 1.0, True),
    ("A1", 1.1, True),
    ("AIR", 0.65, False),
)
FIRST_NAMES = (
    "João",
    "José",
    "António",
    "Manuel",
    "Carlos",
    "Paulo",
    "Pedro",
    "Rui",
    "Luís",
    "Jorge",
    "Sérgio",
    "Nuno",
    "Filipe",
    "Ricardo",
    "Miguel",
    "Tiago",
    "Bruno",
    "Hugo",
    "André",
    "Vítor",
    "Fernando",
    "Eduardo",
    "Leandro",
    "Alexandre",
    "David",
    "Diogo",
    "Fábio",
    "Marco",
    "Joana",
    "Ana",
    "Maria",
    "Sofia",
    "Catarina",
    "Marta",
    "Rita",
    "Sandra",
    "Cláudia",
    "Patrícia",
)
SURNAMES = (
    "Silva",
    "Santos",
    "Ferreira",
    "Pereira",
    "Oliveira",
    "Costa",
    "Rodrigues",
    "Martins",
    "Sousa",
    "Fernandes",
    "Gonçalves",
    "Gomes",
    "Lopes",
    "Marques",
    "Alves",
    "Almeida",
    "Ribeiro",
    "Pinto",
    "Carvalho",
    "Teixeira",
    "Moreira",
    "Correia",
    "Mendes",
    "Nunes",
    "Soares",
    "Vieira",
    "Monteiro",
    "Cardoso",
    "Rocha",
    "Neves",
    "Coelho",
    "Cruz",
    "Cunha",
    "Pires",
    "Ramos",
    "Reis",
    "Simões",
    "Antunes",
    "Matos",
    "Fonseca",
    "Machado",
    "Araújo",
    "Barbosa",
    "Tavares",
    "Batista",
    "Campos",
)
NICKNAMES = ("Melro", "Pardal", "Russo", "Tigre", "Mocho", "Catita", "Fininho", "Grilo", "Texas", "Piloto")
FORMER_STAFF_SHARE = 164 / 301  # 'z) ' prefix and Activo 0
INACTIVE_UNPREFIXED = 4  # Activo 0 without the prefix (168 inactive, 164 prefixed)
NICKNAME_RATE = 0.05
TRAILING_SPACE_RATE = 0.06  # the real names carry stray trailing spaces

Progress = Callable[[str], None]


def _minute(text: str) -> int:
    """Minutes since 1970 of an ISO date/time."""
    return int(np.datetime64(text, "m").astype(np.int64))


MINUTES_PER_DAY = 1_440


def _within(counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(c)`` for each c in ``counts``."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


def _allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Split an integer total proportionally to weights (cumulative rounding, exact sum)."""
    weights = np.asarray(weights, dtype=np.float64)
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    cum = np.rint(np.cumsum(weights) / weights.sum() * total).astype(np.int64)
    return np.diff(np.concatenate([[0], cum]))


def _adjust_total(counts: np.ndarray, target: int, lo: int, hi: int, rng) -> np.ndarray:
    """Add/remove 1 at random entries (kept within [lo, hi]) until counts sum to target."""
    counts = counts.copy()
    for _ in range(1000):
        diff = int(target - counts.sum())
        if diff == 0:
            return counts
        room = np.flatnonzero(counts < hi) if diff > 0 else np.flatnonzero(counts > lo)
        pick = rng.choice(room, min(abs(diff), len(room)), replace=False)
        counts[pick] += 1 if diff > 0 else -1
    raise RuntimeError("could not reach the target total")


def _round_to(x: np.ndarray, step: float) -> np.ndarray:
    """Round to a multiple of step, then to 2 decimals (so repr is short: 8.55, not 8.549999)."""
    return np.round(np.round(np.asarray(x) / step) * step, 2)


def _rng(seed: int, stream: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, chunk])


# ================================ catalogue ======================================================


@dataclass
class Catalogue:
    product_ids: np.ndarray
    product_names: list
    peso_desmolde: np.ndarray
    peso_acabamento: np.ndarray
    gel_deck: np.ndarray
    gel_casco: np.ndarray
    free_product_ids: np.ndarray  # ids inside the product-id range that are not models
    route_start: np.ndarray  # CSR over the flat route arrays, per product index
    route_len: np.ndarray
    route_phase: np.ndarray
    route_seq: np.ndarray
    route_coef: np.ndarray
    route_coefx: np.ndarray
    employee_ids: np.ndarray
    employee_names: list
    employee_active: np.ndarray
    employee_rows: np.ndarray  # rows per employee in Funcionarios (= skill rows)
    unknown_employee_ids: np.ndarray


def _catalogue(seed: int) -> Catalogue:
    rng = _rng(seed, STREAM_CATALOGUE)
    products = _products(rng)
    routes = _routes(rng)
    employees = _employees(rng)
    return Catalogue(**products, **routes, **employees)


def _product_names(rng) -> list[tuple[int, str, int, tuple]]:
    """894 unique names, consecutive ones being variants of one model: (class, name, size, gel)."""
    models = [(c, m) for c in range(len(BOAT_CLASSES)) for m in range(len(MODEL_NAMES))]
    out: list[tuple[int, str, int, tuple]] = []
    for k in rng.permutation(len(models)).tolist():
        cls, model = models[k]
        cons = CONSTRUCTIONS[int(rng.integers(len(CONSTRUCTIONS)))]
        sizes = np.sort(rng.choice(len(SIZES), int(rng.integers(2, 6)), replace=False)).tolist()
        for s in sizes:
            name = f"{BOAT_CLASSES[cls][0]} {MODEL_NAMES[model]} {SIZES[s][0]} {cons[0]}"
            out.append((cls, name, s, cons))
        if len(out) >= N_PRODUCTS:
            return out[:N_PRODUCTS]
    raise RuntimeError("not enough product name combinations")


def _products(rng) -> dict:
    ids = np.sort(rng.choice(np.arange(20_168, 53_815), N_PRODUCTS, replace=False))
    names = _product_names(rng)
    cls = np.array([n[0] for n in names])
    size_adj = np.array([SIZES[n[2]][1] for n in names])
    factor = np.array([n[3][1] for n in names])
    has_gel = np.array([n[3][2] for n in names])
    base = np.array([c[1] for c in BOAT_CLASSES])[cls]
    desmolde = _round_to(base * factor + size_adj + rng.normal(0, 0.2, N_PRODUCTS), 0.05)
    acabamento = _round_to(desmolde * rng.uniform(1.2, 1.55, N_PRODUCTS), 0.5)
    gel = np.array([c[2] for c in BOAT_CLASSES])[cls]
    deck = np.where(has_gel, _round_to(gel * rng.uniform(0.8, 1.1, N_PRODUCTS), 0.05), 0.0)
    casco = np.where(has_gel, _round_to(gel * rng.uniform(1.0, 1.6, N_PRODUCTS), 0.05), 0.0)
    free = np.setdiff1d(np.arange(ids[0], ids[-1] + 1), ids)
    return dict(
        product_ids=ids,
        product_names=[n[1] for n in names],
        peso_desmolde=desmolde,
        peso_acabamento=acabamento,
        gel_deck=deck,
        gel_casco=casco,
        free_product_ids=free,
    )


def _route_inclusion(rng) -> np.ndarray:
    """Which template phases each product's route has; exactly the real number of rows."""
    probs = np.array([t[1] for t in ROUTE_TEMPLATE])
    inc = rng.random((N_PRODUCTS, len(ROUTE_TEMPLATE))) < probs
    inc[:, probs >= 1.0] = True
    diff = (N_ROUTE_ROWS - ROUTE_PAIR_REPEATS) - int(inc.sum())
    optional = np.broadcast_to(probs < 1.0, inc.shape)
    cells = np.flatnonzero(optional & (~inc if diff > 0 else inc))
    p = np.broadcast_to(probs if diff > 0 else 1 - probs, inc.shape).ravel()[cells]
    pick = rng.choice(cells, abs(diff), replace=False, p=p / p.sum())
    inc.ravel()[pick] = diff > 0
    return inc


def _routes(rng) -> dict:
    inc = _route_inclusion(rng)
    template_phase = np.array([t[0] for t in ROUTE_TEMPLATE])
    template_coef = np.array([t[2] for t in ROUTE_TEMPLATE])
    repeated = set(rng.choice(N_PRODUCTS, ROUTE_PAIR_REPEATS, replace=False).tolist())
    rep_phases = np.array(list(REPEATABLE_PHASES))
    rep_w = np.array(list(REPEATABLE_PHASES.values()))
    phases, coefs, lengths = [], [], []
    for p in range(N_PRODUCTS):
        route = template_phase[inc[p]].tolist()
        coef = template_coef[inc[p]].tolist()
        if p in repeated:
            can = np.isin(rep_phases, route)
            ph = int(rng.choice(rep_phases[can], p=rep_w[can] / rep_w[can].sum()))
            at = min(route.index(ph) + 2, len(route) - 1)  # a bit later, always before Entregue
            route.insert(at, ph)
            coef.insert(at, coef[route.index(ph)])
        phases += route
        coefs += coef
        lengths.append(len(route))
    lengths = np.array(lengths)
    n = len(phases)
    jitter = np.array(COEF_JITTER)[rng.integers(len(COEF_JITTER), size=n)]
    coefx = np.where(
        rng.random(n) < ROUTE_COEFX_ZERO_RATE, 0.0, np.array(COEFX_VALUES)[rng.integers(len(COEFX_VALUES), size=n)]
    )
    return dict(
        route_start=np.cumsum(lengths) - lengths,
        route_len=lengths,
        route_phase=np.array(phases),
        route_seq=_within(lengths) + 1,
        route_coef=np.maximum(0.25, np.array(coefs) + jitter),
        route_coefx=coefx,
    )


def _employee_name(rng, former: bool) -> str:
    first = FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))]
    surnames = rng.choice(len(SURNAMES), 2, replace=False).tolist()
    if former and rng.random() < 0.5:
        name = first
    elif rng.random() < 0.5:
        name = f"{first} {SURNAMES[surnames[0]]}"
    else:
        name = f"{first} {SURNAMES[surnames[0]]} {SURNAMES[surnames[1]]}"
    if rng.random() < NICKNAME_RATE:
        name += f" ({NICKNAMES[int(rng.integers(len(NICKNAMES)))]})"
    if rng.random() < TRAILING_SPACE_RATE:
        name += " "
    return f"z) {name}" if former else name


def _employees(rng) -> dict:
    gaps = rng.geometric(0.6, N_EMPLOYEES) + (rng.random(N_EMPLOYEES) < 0.03) * rng.integers(100, 2000, N_EMPLOYEES)
    ids = 20_343 + np.cumsum(gaps) - gaps[0]
    former = rng.random(N_EMPLOYEES) < FORMER_STAFF_SHARE
    names = [_employee_name(rng, bool(f)) for f in former]
    active = (~former).astype(np.int64)
    active[rng.choice(np.flatnonzero(~former), INACTIVE_UNPREFIXED, replace=False)] = 0
    rows = 1 + np.minimum(14, np.floor(rng.exponential(2.5, N_EMPLOYEES))).astype(np.int64)
    rows = _adjust_total(rows, N_EMPLOYEE_ROWS, 1, 15, rng)
    unknown = ids[-1] + np.array([17, 41])[:UNKNOWN_EMPLOYEES]
    return dict(
        employee_ids=ids, employee_names=names, employee_active=active, employee_rows=rows, unknown_employee_ids=unknown
    )


# ================================ order plan =====================================================


@dataclass
class Plan:
    scale: float
    seed: int
    of_id: np.ndarray  # per planned order (including orders missing from OrdensFabrico)
    created: np.ndarray  # minutes since 1970
    route_prod: np.ndarray  # product index whose route the order follows
    product_id: np.ndarray  # Of_ProdutoId (an unknown id for orphan-product orders)
    missing: np.ndarray  # bool: phase rows exist, the order is not in OrdensFabrico
    open: np.ndarray  # bool: Of_DataAcabamento NULL, last phase(s) open
    dup: np.ndarray  # bool: one of its phase rows is exported twice
    inverted: np.ndarray  # bool: finishes before it was created
    defect_rows_missing: np.ndarray  # defect rows of a missing order
    chunks: list  # (first order, end order) per generation chunk
    link_match_rate: float = LINK_ID_MATCH_RATE  # distinct employee-link FaseOfIds that exist

    @property
    def n_orders(self) -> int:
        return len(self.of_id)


def _plan(cat: Catalogue, scale: float, seed: int) -> Plan:
    rng = _rng(seed, STREAM_PLAN)
    n_visible = max(MIN_ORDERS, round(ORDERS_AT_SCALE_1 * scale))
    n_missing = max(1, round(n_visible * MISSING_ORDER_RATE))
    n = n_visible + n_missing
    of_id = 120_001 + np.cumsum(rng.geometric(0.6, n))
    created = _creation_times(n, rng)
    missing = np.zeros(n, dtype=bool)
    missing[rng.choice(np.arange(1, n), n_missing, replace=False)] = True
    visible = np.flatnonzero(~missing)
    open_ = np.zeros(n, dtype=bool)
    age_days = (_minute(EXPORT_TIME) - created[visible]) / MINUTES_PER_DAY
    w = np.exp(-age_days / 45.0) + 1e-3
    n_open = max(1, round(n_visible * OPEN_ORDER_RATE))
    open_[rng.choice(visible, n_open, replace=False, p=w / w.sum())] = True
    route_prod, product_id = _assign_products(cat, missing, rng)
    finished = np.flatnonzero(~missing & ~open_)
    inverted = np.zeros(n, dtype=bool)
    inverted[
        rng.choice(finished, min(len(finished), max(1, round(INVERTED_ORDERS_PER_SCALE * scale))), replace=False)
    ] = True
    n_dup = max(1, round(DUPLICATE_PHASE_ROW_RATE * ORDERS_AT_SCALE_1 * 19 * scale))
    dup = np.zeros(n, dtype=bool)
    dup[rng.choice(n, min(n, n_dup), replace=False)] = True
    chunks = [(a, min(n, a + CHUNK_ORDERS)) for a in range(0, n, CHUNK_ORDERS)]
    return Plan(
        scale,
        seed,
        of_id,
        created,
        route_prod,
        product_id,
        missing,
        open_,
        dup,
        inverted,
        _missing_defects(missing, scale, rng),
        chunks,
    )


def _creation_times(n: int, rng) -> np.ndarray:
    first, last = _minute(FIRST_CREATED), _minute(LAST_CREATED)
    days = np.sort(rng.integers(first // MINUTES_PER_DAY, last // MINUTES_PER_DAY + 1, n))
    clock = rng.integers(7 * 60, 19 * 60, n) * (rng.random(n) >= MIDNIGHT_CREATION_RATE)
    return days * MINUTES_PER_DAY + clock


def _assign_products(cat: Catalogue, missing: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Route product per order (popularity skewed) and Of_ProdutoId with orphan ids."""
    n = len(missing)
    p = np.empty(N_PRODUCTS)
    p[rng.permutation(N_PRODUCTS)] = 1.0 / (np.arange(N_PRODUCTS) + 3.0)
    route_prod = rng.choice(N_PRODUCTS, n, p=p / p.sum())
    visible = np.flatnonzero(~missing)
    unused = np.setdiff1d(np.arange(N_PRODUCTS), route_prod[visible])
    if 0 < len(unused) <= FILL_UNUSED_PRODUCTS_MAX:
        top = visible[route_prod[visible] == np.bincount(route_prod[visible]).argmax()]
        route_prod[rng.choice(top, len(unused), replace=False)] = unused
    product_id = cat.product_ids[route_prod]
    used, first = np.unique(route_prod[visible], return_index=True)
    n_unknown = round(len(used) * (1 - PRODUCT_MATCH_RATE) / PRODUCT_MATCH_RATE)
    n_orphans = n_unknown + round(n_unknown * (ORPHAN_ORDERS_PER_UNKNOWN_ID - 1))
    candidates = np.delete(visible, first)  # relabelling them keeps every used model in use
    n_orphans = min(n_orphans, len(candidates))
    n_unknown = min(n_unknown, n_orphans)
    if n_orphans:
        orphans = rng.choice(candidates, n_orphans, replace=False)
        unknown = rng.choice(cat.free_product_ids, n_unknown, replace=False)
        pick = np.concatenate([np.arange(n_unknown), rng.integers(0, n_unknown, n_orphans - n_unknown)])
        product_id[orphans] = unknown[pick]
    return route_prod, product_id


def _missing_defects(missing: np.ndarray, scale: float, rng) -> np.ndarray:
    """Defect rows per order for orders absent from OrdensFabrico (9 rows on 5 orders)."""
    rows = max(1, round(DEFECT_ROWS_MISSING_ORDERS_PER_SCALE * scale))
    candidates = np.flatnonzero(missing)
    n_orders = min(len(candidates), rows, max(1, round(DEFECT_MISSING_ORDERS_PER_SCALE * scale)))
    orders = rng.choice(candidates, n_orders, replace=False)
    per_order = 1 + np.bincount(rng.integers(0, n_orders, rows - n_orders), minlength=n_orders)
    out = np.zeros(len(missing), dtype=np.int64)
    out[orders] = per_order
    return out


# ================================ phase rows per chunk ===========================================


@dataclass
class PhaseChunk:
    """Unique phase rows of a chunk of orders, in FaseOf_Id order (= order, then time)."""

    orders: np.ndarray  # global order index per order of the chunk
    row_order: np.ndarray  # local order index per row
    order_first: np.ndarray  # first row per local order (len = orders + 1)
    pos: np.ndarray  # position of the row in its order (Sequencia - 1)
    ids: np.ndarray
    gaps: np.ndarray  # next id - id
    phase: np.ndarray
    coef: np.ndarray
    coefx: np.ndarray
    peso: np.ndarray
    retorno: np.ndarray
    inicio: np.ndarray  # minutes
    fim: np.ndarray  # minutes; undefined where open
    open: np.ndarray
    prevista: np.ndarray  # minutes; undefined where not planned
    planned: np.ndarray
    turno: np.ndarray
    dup_rows: np.ndarray  # rows exported twice
    finish: np.ndarray  # per local order: end of its last phase (before Fim < Inicio quirks)
    current_phase: np.ndarray  # per local order: its first open phase, else Entregue

    @property
    def n(self) -> int:
        return len(self.ids)


def _route_rows(cat: Catalogue, route_prod: np.ndarray, rng) -> tuple[np.ndarray, ...]:
    """Rows of the chunk in time order: (local order, flat route index, rework flag)."""
    lengths = cat.route_len[route_prod]
    n_o = len(lengths)
    o_orig = np.repeat(np.arange(n_o), lengths)
    pos_orig = _within(lengths)
    episodes = rng.poisson(REWORK_EPISODES_PER_ORDER, n_o)
    o_ep = np.repeat(np.arange(n_o), episodes)
    after = (rng.random(len(o_ep)) * (lengths[o_ep] - 3)).astype(np.int64)  # before the warehouse
    size = np.minimum(rng.choice(len(REWORK_BLOCK_P), len(o_ep), p=REWORK_BLOCK_P) + 1, after + 1)
    rank = np.minimum(_within(episodes), 7)
    o_rw = np.repeat(o_ep, size)
    r = _within(size)
    pos_rw = np.repeat(after - size + 1, size) + r
    key_rw = np.repeat(after + 0.5 + rank * 4 / 64, size) + r / 64
    order = np.concatenate([o_orig, o_rw])
    key = np.concatenate([pos_orig.astype(np.float64), key_rw])
    flat = cat.route_start[route_prod[order]] + np.concatenate([pos_orig, pos_rw])
    retorno = np.concatenate([np.zeros(len(o_orig), np.int64), np.ones(len(o_rw), np.int64)])
    sort = np.lexsort((key, order))
    return order[sort], flat[sort], retorno[sort]


def _cut_open(order: np.ndarray, is_open: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """For open orders keep the done rows and 1-2 open rows; returns (keep, open) row masks."""
    counts = np.bincount(order, minlength=len(is_open))
    pos = _within(counts)
    u = rng.random(len(is_open))
    done = np.where(
        u < OPEN_WAITING_FIRST_PHASE,
        0,
        np.where(
            u < OPEN_WAITING_FIRST_PHASE + OPEN_IN_WAREHOUSE,
            counts - 3,
            (rng.random(len(is_open)) * (counts - 2)).astype(np.int64) + 1,
        ),
    )
    done = np.clip(done, 0, counts - 2)
    n_open = np.minimum(1 + (rng.random(len(is_open)) < SECOND_OPEN_PHASE_RATE), counts - 1 - done)
    o_done, o_open = done[order], (done + n_open)[order]
    keep = ~is_open[order] | (pos < o_open)
    open_rows = is_open[order] & (pos >= o_done) & (pos < o_open)
    return keep, open_rows


def _phase_times(
    created: np.ndarray, order: np.ndarray, coef: np.ndarray, is_open_order: np.ndarray, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Inicio/Fim in minutes: phases one after the other; an order that would run past the
    export is squeezed to end at a random time between its creation and the export."""
    n = len(order)
    wait = rng.lognormal(math.log(WAIT_MEDIAN_MIN), WAIT_SIGMA, n)
    wait += (rng.random(n) < STALL_RATE) * rng.uniform(3, 25, n) * MINUTES_PER_DAY
    duration = np.maximum(2.0, coef * 60.0 * rng.lognormal(0.0, DURATION_SIGMA, n))
    step = wait + duration
    counts = np.bincount(order, minlength=len(created))
    first = np.cumsum(counts) - counts
    cum = np.cumsum(step)
    before = cum - step - (cum - step)[first][order]
    start, end = before + wait, before + wait + duration
    last = first + counts - 1
    horizon = np.where(is_open_order, start[last], end[last])
    room = (_minute(EXPORT_TIME) - 1 - created) * rng.uniform(0.6, 1.0, len(created))
    factor = np.minimum(1.0, room / np.maximum(horizon, 1.0))[order]
    base = created[order]
    return base + np.floor(start * factor).astype(np.int64), base + np.floor(end * factor).astype(np.int64)


def _phase_chunk(cat: Catalogue, plan: Plan, chunk: int, first_id: int) -> PhaseChunk:
    a, b = plan.chunks[chunk]
    rng = _rng(plan.seed, STREAM_PHASES, chunk)
    orders = np.arange(a, b)
    route_prod = plan.route_prod[orders]
    order, flat, retorno = _route_rows(cat, route_prod, rng)
    keep, open_rows = _cut_open(order, plan.open[orders], rng)
    order, flat, retorno, open_rows = order[keep], flat[keep], retorno[keep], open_rows[keep]
    counts = np.bincount(order, minlength=len(orders))
    order_first = np.concatenate([[0], np.cumsum(counts)])
    coef = cat.route_coef[flat]
    inicio, fim = _phase_times(plan.created[orders], order, coef, plan.open[orders], rng)
    phase = cat.route_phase[flat]
    last = order_first[1:] - 1
    first_open = np.full(len(orders), DELIVERED)
    open_idx = np.flatnonzero(open_rows)
    open_orders, earliest = np.unique(order[open_idx], return_index=True)
    first_open[open_orders] = phase[open_idx[earliest]]
    finish = fim[last]
    fim = _invert_some(inicio, fim, open_rows, last, rng)
    gaps = rng.geometric(1.0 / ID_GAP_MEAN, len(order))
    ids = first_id + np.cumsum(gaps) - gaps
    attrs = _phase_attributes(cat, plan, orders[order], flat, phase, retorno, inicio, rng)
    dup_orders = np.flatnonzero(plan.dup[orders])
    dup_rows = order_first[dup_orders] + (rng.random(len(dup_orders)) * counts[dup_orders]).astype(np.int64)
    return PhaseChunk(
        orders=orders,
        row_order=order,
        order_first=order_first,
        pos=_within(counts),
        ids=ids,
        gaps=gaps,
        phase=phase,
        coef=coef,
        retorno=retorno,
        inicio=inicio,
        fim=fim,
        open=open_rows,
        dup_rows=np.sort(dup_rows),
        finish=finish,
        current_phase=first_open,
        **attrs,
    )


def _invert_some(inicio: np.ndarray, fim: np.ndarray, open_rows: np.ndarray, last: np.ndarray, rng) -> np.ndarray:
    """Fim < Inicio on a few done rows (never an order's last row, which dates the order)."""
    candidate = ~open_rows
    candidate[last] = False
    rate = INVERTED_PHASE_RATE * len(inicio) / max(1, int(candidate.sum()))  # a share of all rows
    flip = candidate & (rng.random(len(inicio)) < rate)
    return np.where(flip, inicio - rng.integers(1, 240, len(inicio)), fim)


def _phase_attributes(
    cat: Catalogue,
    plan: Plan,
    order: np.ndarray,
    flat: np.ndarray,
    phase: np.ndarray,
    retorno: np.ndarray,
    inicio: np.ndarray,
    rng,
) -> dict:
    n = len(order)
    coefx_set = np.array(COEFX_VALUES)[rng.integers(len(COEFX_VALUES), size=n)]
    coefx = np.where(
        rng.random(n) < COEFX_NONZERO_RATE, np.where(cat.route_coefx[flat] > 0, cat.route_coefx[flat], coefx_set), 0.0
    )
    prod = plan.route_prod[order]
    recorded = (retorno == 0) & (rng.random(n) < PESO_RECORDED_P)
    kg = np.where(
        np.isin(phase, WEIGHED_AT_DEMOULD),
        cat.peso_desmolde[prod],
        np.where(np.isin(phase, WEIGHED_FINISHED), cat.peso_acabamento[prod], 0.0),
    )
    peso = np.where(recorded, np.round(kg * (1 + rng.normal(0, 0.03, n)), 1), 0.0)
    p_plan = np.where(inicio >= _minute(PLANNING_START), PLANNED_RECENT_P, PLANNED_OLD_P)
    planned = rng.random(n) < p_plan
    prevista = (inicio // MINUTES_PER_DAY + rng.integers(-3, 4, n)) * MINUTES_PER_DAY
    hour = (inicio % MINUTES_PER_DAY) // 60
    turno = np.where((hour >= 6) & (hour < 14), 1, np.where((hour >= 14) & (hour < 22), 2, 3))
    return dict(coefx=coefx, peso=np.maximum(peso, 0.0), prevista=prevista, planned=planned, turno=turno)


def _phase_chunks(cat: Catalogue, plan: Plan, first_ids: list[int] | None = None) -> Iterator[PhaseChunk]:
    """All chunks in order, each regenerated from its own random stream. FaseOf_Id runs on
    from chunk to chunk; ``first_ids`` (known after a first pass) gives each chunk's start."""
    next_id = FIRST_PHASE_ID
    for c in range(len(plan.chunks)):
        start = first_ids[c] if first_ids is not None else next_id
        chunk = _phase_chunk(cat, plan, c, start)
        next_id = int(chunk.ids[-1] + chunk.gaps[-1]) if chunk.n else start
        yield chunk


@dataclass
class PhaseSummary:
    """What the other sheets need from a first pass over the phase rows."""

    first_ids: list  # first FaseOf_Id per chunk
    rows: np.ndarray  # unique phase rows per chunk
    inspections: np.ndarray  # done inspection rows of orders in OrdensFabrico, per chunk
    finish: np.ndarray  # per order
    current_phase: np.ndarray  # per order


def _summarise_phases(cat: Catalogue, plan: Plan) -> PhaseSummary:
    first_ids, rows, inspections = [], [], []
    finish = np.zeros(plan.n_orders, dtype=np.int64)
    current = np.zeros(plan.n_orders, dtype=np.int64)
    for ch in _phase_chunks(cat, plan):
        first_ids.append(int(ch.ids[0]) if ch.n else FIRST_PHASE_ID)
        rows.append(ch.n)
        inspections.append(int(_inspection_rows(ch, ~plan.missing[ch.orders][ch.row_order]).sum()))
        finish[ch.orders] = ch.finish
        current[ch.orders] = ch.current_phase
    return PhaseSummary(first_ids, np.array(rows), np.array(inspections), finish, current)


def _inspection_rows(ch: PhaseChunk, row_filter: np.ndarray) -> np.ndarray:
    """Mask of done Desmolde / final QC rows (where defects are recorded)."""
    return np.isin(ch.phase, INSPECTION_PHASES) & ~ch.open & row_filter


# ================================ sheets =========================================================

Columns = dict  # header -> values, or (values, null mask)


def _dt(minutes: np.ndarray) -> np.ndarray:
    return np.asarray(minutes, dtype=np.int64).astype("datetime64[m]")


def _orders_sheet(cat: Catalogue, plan: Plan, summary: PhaseSummary, rng) -> Iterator[Columns]:
    rows = np.flatnonzero(~plan.missing)
    created = plan.created[rows]
    is_open = plan.open[rows]
    finish = summary.finish[rows].copy()
    inverted = np.flatnonzero(plan.inverted[rows])
    finish[inverted] = (
        created[inverted]
        - rng.integers(1, 60, len(inverted)) * MINUTES_PER_DAY
        - rng.integers(0, MINUTES_PER_DAY, len(inverted))
    )
    if len(inverted):
        finish[inverted[0]] = _minute(YEAR_2006_FINISH)
    finish_day = summary.finish[rows] // MINUTES_PER_DAY
    late = rng.random(len(rows)) < TRANSPORT_LATE_RATE
    offset = np.where(late, -rng.integers(1, 11, len(rows)), rng.integers(0, 21, len(rows)))
    planned_day = created // MINUTES_PER_DAY + rng.integers(20, 91, len(rows))
    transport = np.where(is_open, planned_day, finish_day + offset) * MINUTES_PER_DAY
    yield {
        "Of_Id": plan.of_id[rows],
        "Of_DataCriacao": _dt(created),
        "Of_DataAcabamento": (_dt(finish), is_open),
        "Of_ProdutoId": plan.product_id[rows],
        "Of_FaseId": np.where(is_open, summary.current_phase[rows], DELIVERED),
        "Of_DataTransporte": (_dt(transport), rng.random(len(rows)) < TRANSPORT_NULL_RATE),
    }


def _phases_sheet(cat: Catalogue, plan: Plan, summary: PhaseSummary, rng) -> Iterator[Columns]:
    for ch in _phase_chunks(cat, plan, summary.first_ids):
        times = np.ones(ch.n, dtype=np.int64)
        times[ch.dup_rows] = 2
        r = np.repeat(np.arange(ch.n), times)
        yield {
            "FaseOf_Id": ch.ids[r],
            "FaseOf_OfId": plan.of_id[ch.orders[ch.row_order[r]]],
            "FaseOf_Inicio": _dt(ch.inicio[r]),
            "FaseOf_Fim": (_dt(ch.fim[r]), ch.open[r]),
            "FaseOf_DataPrevista": (_dt(ch.prevista[r]), ~ch.planned[r]),
            "FaseOf_Coeficiente": ch.coef[r],
            "FaseOf_CoeficienteX": ch.coefx[r],
            "FaseOf_FaseId": ch.phase[r],
            "FaseOf_Peso": ch.peso[r],
            "FaseOf_Retorno": ch.retorno[r],
            "FaseOf_Turno": (ch.turno[r], ~ch.planned[r]),
            "FaseOf_Sequencia": ch.pos[r] + 1,
        }


def _link_allocation(plan: Plan, summary: PhaseSummary) -> np.ndarray:
    """Per chunk: (matched ids, unmatched ids, extra rows) of FuncionariosFaseOrdemFabrico."""
    total = max(MIN_LINKS, round(EMPLOYEE_LINKS_AT_SCALE_1 * plan.scale))
    distinct = max(1, round(total / LINK_ROWS_PER_ID))
    matched = max(1, round(distinct * plan.link_match_rate))
    w = summary.rows
    return np.stack([_allocate(matched, w), _allocate(distinct - matched, w), _allocate(total - distinct, w)], 1)


def _link_ids(ch: PhaseChunk, matched: int, unmatched: int, rng) -> np.ndarray:
    """Sorted distinct FaseOfIds: some phase-row ids, the rest ids in the gaps between them."""
    ids = rng.choice(ch.ids, min(matched, ch.n), replace=False)
    gap_rows = np.flatnonzero(ch.gaps >= 2)
    sel = rng.choice(gap_rows, min(unmatched, len(gap_rows)), replace=False)
    in_gap = ch.ids[sel] + 1 + (rng.random(len(sel)) * (ch.gaps[sel] - 1)).astype(np.int64)
    return np.sort(np.concatenate([ids, in_gap]))


def _links_sheet(cat: Catalogue, plan: Plan, summary: PhaseSummary, rng) -> Iterator[Columns]:
    alloc = _link_allocation(plan, summary)
    n_emp = len(cat.employee_ids)
    for c, ch in enumerate(_phase_chunks(cat, plan, summary.first_ids)):
        crng = _rng(plan.seed, STREAM_LINKS, c)
        ids = _link_ids(ch, int(alloc[c, 0]), int(alloc[c, 1]), crng)
        if len(ids) == 0:
            continue
        k = 1 + np.bincount(crng.integers(0, len(ids), int(alloc[c, 2])), minlength=len(ids))
        j = _within(k)
        first = np.repeat(crng.integers(0, n_emp, len(ids)), k)
        step = np.repeat(crng.integers(1, n_emp // k.max() + 1, len(ids)), k)
        emp = cat.employee_ids[(first + j * step) % n_emp]  # distinct within an id
        unknown = (j == 0) & np.repeat(k == 1, k) & (crng.random(len(j)) < UNKNOWN_EMPLOYEE_ROW_RATE)
        if c == 0:  # both unknown ids appear at any scale
            unknown[np.flatnonzero(j == 0)[:UNKNOWN_EMPLOYEES]] = True
        unknown_ids = cat.unknown_employee_ids[crng.integers(0, UNKNOWN_EMPLOYEES, len(j))]
        if c == 0:
            unknown_ids[np.flatnonzero(j == 0)[:UNKNOWN_EMPLOYEES]] = cat.unknown_employee_ids
        yield {
            "FuncionarioFaseOf_FaseOfId": np.repeat(ids, k),
            "FuncionarioFaseOf_FuncionarioId": np.where(unknown, unknown_ids, emp),
            "FuncionarioFaseOf_Chefe": (crng.random(len(j)) < CHEFE_RATE).astype(np.int64),
        }


def _defect_inspections(ch: PhaseChunk, plan: Plan, n_rows: int, rng) -> np.ndarray:
    """Inspection row per defect: of known orders (weighted, overdispersed), then of missing ones."""
    missing_row = plan.missing[ch.orders][ch.row_order]
    known = np.flatnonzero(_inspection_rows(ch, ~missing_row))
    picks = []
    if len(known) and n_rows:
        w = np.where(ch.phase[known] == FINAL_QC, DEFECT_FINAL_QC_SHARE, 1 - DEFECT_FINAL_QC_SHARE)
        w = w * np.minimum(rng.gamma(DEFECT_OVERDISPERSION, 1.0, len(known)), 4.0)
        picks.append(_cap_per_inspection(rng.choice(known, n_rows, p=w / w.sum()), ch, known, rng))
    for o in np.flatnonzero(plan.defect_rows_missing[ch.orders]).tolist():
        rows = np.arange(ch.order_first[o], ch.order_first[o + 1])
        rows = rows[_inspection_rows(ch, np.ones(ch.n, bool))[rows]]
        picks.append(rng.choice(rows, int(plan.defect_rows_missing[ch.orders[o]])))
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=np.int64)


def _cap_per_inspection(picks: np.ndarray, ch: PhaseChunk, candidates: np.ndarray, rng) -> np.ndarray:
    """Move defects off an inspection row that has more of them than there are defect names."""
    cap = np.where(ch.phase == FINAL_QC, len(DEFECTS_AT_FINAL_QC), len(DEFECTS_AT_DEMOULD))
    for _ in range(50):
        picks = np.sort(picks)
        over = _within(np.unique(picks, return_counts=True)[1]) >= cap[picks]
        if not over.any():
            return picks
        picks = np.concatenate([picks[~over], rng.choice(candidates, int(over.sum()))])
    return np.sort(picks[~over])


def _defect_names(rows: np.ndarray, phase: np.ndarray, rng) -> np.ndarray:
    """A defect name per row, popular names more often, never twice for one inspection row."""
    out = np.empty(len(rows), dtype=object)
    for ph, names in ((DESMOLDE, DEFECTS_AT_DEMOULD), (FINAL_QC, DEFECTS_AT_FINAL_QC)):
        sel = np.flatnonzero(phase == ph)
        if not len(sel):
            continue
        groups, group = np.unique(rows[sel], return_inverse=True)
        rank = _within(np.bincount(group))  # rows are sorted, so groups are contiguous
        if rank.max() >= len(names):
            raise RuntimeError("more defects on one inspection than defect names")
        logw = -1.1 * np.log(np.arange(1, len(names) + 1))
        keys = logw + rng.gumbel(size=(len(groups), len(names)))
        order = np.argsort(-keys, axis=1)  # a weighted permutation of the names per inspection
        out[sel] = np.array(names, dtype=object)[order[group, rank]]
    return out


def _defects_sheet(cat: Catalogue, plan: Plan, summary: PhaseSummary, rng) -> Iterator[Columns]:
    total = max(MIN_DEFECTS, round(DEFECTS_AT_SCALE_1 * plan.scale))
    alloc = _allocate(total - int(plan.defect_rows_missing.sum()), summary.inspections)
    for c, ch in enumerate(_phase_chunks(cat, plan, summary.first_ids)):
        crng = _rng(plan.seed, STREAM_DEFECTS, c)
        n_repeat = int(crng.binomial(alloc[c], DEFECT_REPEAT_RATE))
        rows = _defect_inspections(ch, plan, int(alloc[c]) - n_repeat, crng)
        if len(rows) == 0:
            continue
        names = _defect_names(rows, ch.phase[rows], crng)
        pos = ch.pos[rows]
        blamed = ch.order_first[ch.row_order[rows]] + (crng.random(len(rows)) * pos).astype(np.int64)
        no_blame = (crng.random(len(rows)) < DEFECT_CULPADA_NULL_RATE) | (pos == 0)
        severity = crng.choice(3, len(rows), p=DEFECT_SEVERITY_P) + 1
        r = np.sort(np.concatenate([np.arange(len(rows)), crng.integers(0, len(rows), n_repeat)]))
        yield {
            "Erro_Descricao": names[r],
            "Erro_OfId": plan.of_id[ch.orders[ch.row_order[rows[r]]]],
            "Erro_FaseAvaliacao": ch.phase[rows[r]],
            "OFCH_GRAVIDADE": severity[r],
            "Erro_FaseOfAvaliacao": ch.ids[rows[r]],
            "Erro_FaseOfCulpada": (ch.ids[blamed[r]], no_blame[r]),
        }


def _employees_sheet(cat: Catalogue, plan: Plan, summary: PhaseSummary, rng) -> Iterator[Columns]:
    r = np.repeat(np.arange(len(cat.employee_ids)), cat.employee_rows)  # copies adjacent, as exported
    yield {
        "Funcionario_Id": cat.employee_ids[r],
        "Funcionario_Nome": np.array(cat.employee_names, dtype=object)[r],
        "Funcionario_Activo": cat.employee_active[r],
    }


def _skill_rows(cat: Catalogue, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(employee index, phase, Inicio minutes or -1 for NULL) per FuncionariosFasesAptos row."""
    k = cat.employee_rows
    emp = np.repeat(np.arange(len(k)), k)
    j = _within(k)
    skills = np.array(SKILL_PHASES)
    logw = -0.6 * np.log(np.arange(1, len(skills) + 1))
    order = np.argsort(-(logw + rng.gumbel(size=(len(k), len(skills)))), axis=1)
    phase = skills[order[emp, np.minimum(j, len(skills) - 1)]]
    twice = rng.choice(np.flatnonzero(k >= 2), SKILL_PAIRS_TWICE, replace=False)
    first_row = np.cumsum(k) - k
    second = first_row[twice] + k[twice] - 1  # its last skill row repeats its first phase
    phase[second] = phase[first_row[twice]]
    pool = np.sort(rng.integers(_minute("2016-08-01"), _minute("2024-12-31"), 120))
    pool = np.where(rng.random(120) < 0.6, pool // MINUTES_PER_DAY * MINUTES_PER_DAY, pool)
    pool = np.concatenate([[_minute(SKILLS_SYSTEM_START)] * 12, pool])
    inicio = pool[rng.integers(0, len(pool), len(emp))]
    later = inicio[first_row[twice]] + rng.integers(30, 900, len(twice)) * MINUTES_PER_DAY
    inicio[second] = np.minimum(later, _minute("2025-06-30"))  # pool ends 2024: still later
    single = np.setdiff1d(np.arange(len(emp)), np.concatenate([second, first_row[twice]]))
    inicio[rng.choice(single, SKILL_NULL_INICIO, replace=False)] = -1
    return emp, phase, inicio


def _skills_sheet(cat: Catalogue, plan: Plan, summary: PhaseSummary, rng) -> Iterator[Columns]:
    emp, phase, inicio = _skill_rows(cat, rng)
    null = inicio < 0
    order = np.lexsort((np.where(null, np.iinfo(np.int64).max, inicio), emp))
    yield {
        "FuncionarioFase_FuncionarioId": cat.employee_ids[emp[order]],
        "FuncionarioFase_FaseId": phase[order],
        "FuncionarioFase_Inicio": (_dt(np.where(null, 0, inicio)[order]), null[order]),
    }


def _phase_catalogue_sheet(cat: Catalogue, plan: Plan, summary: PhaseSummary, rng) -> Iterator[Columns]:
    yield {
        "Fase_Id": np.arange(1, len(PHASES) + 1),
        "Fase_Nome": [p[0] for p in PHASES],
        "Fase_Sequencia": np.array([p[1] for p in PHASES]),
        "Fase_DeProducao": np.array([p[2] for p in PHASES]),
        "Fase_Automatica": np.array([p[3] for p in PHASES]),
    }


def _products_sheet(cat: Catalogue, plan: Plan, summary: PhaseSummary, rng) -> Iterator[Columns]:
    yield {
        "Produto_Id": cat.product_ids,
        "Produto_Nome": cat.product_names,
        "Produto_PesoDesmolde": cat.peso_desmolde,
        "Produto_PesoAcabamento": cat.peso_acabamento,
        "Produto_QtdGelDeck": cat.gel_deck,
        "Produto_QtdGelCasco": cat.gel_casco,
    }


def _routes_sheet(cat: Catalogue, plan: Plan, summary: PhaseSummary, rng) -> Iterator[Columns]:
    yield {
        "ProdutoFase_ProdutoId": np.repeat(cat.product_ids, cat.route_len),
        "ProdutoFase_FaseId": cat.route_phase,
        "ProdutoFase_Sequencia": cat.route_seq,
        "ProdutoFase_Coeficiente": cat.route_coef,
        "ProdutoFase_CoeficienteX": cat.route_coefx,
    }


@dataclass(frozen=True)
class SampleSheet:
    """How the generator writes one contract sheet: its rows, how many to expect (for progress
    and the zip64 decision), and its own random stream, fixed here so that adding or reordering
    a sheet changes no other sheet's rows."""

    generate: Callable[[Catalogue, Plan, PhaseSummary, np.random.Generator], Iterator[Columns]]
    expected_rows: Callable[[Plan, PhaseSummary], int]  # approximate where quotas fall short at tiny scales
    stream: int


def _catalogue_rows(n: int) -> Callable[[Plan, PhaseSummary], int]:
    return lambda plan, summary: n


SAMPLE_SHEETS = {
    contract.ORDENS_FABRICO.name: SampleSheet(_orders_sheet, lambda plan, summary: int((~plan.missing).sum()), 100),
    contract.FASES_ORDEM_FABRICO.name: SampleSheet(
        _phases_sheet, lambda plan, summary: int(summary.rows.sum()) + int(plan.dup.sum()), 101
    ),
    contract.FUNCIONARIOS_FASE_ORDEM_FABRICO.name: SampleSheet(
        _links_sheet, lambda plan, summary: max(MIN_LINKS, round(EMPLOYEE_LINKS_AT_SCALE_1 * plan.scale)), 102
    ),
    contract.ORDEM_FABRICO_ERROS.name: SampleSheet(
        _defects_sheet, lambda plan, summary: max(MIN_DEFECTS, round(DEFECTS_AT_SCALE_1 * plan.scale)), 103
    ),
    contract.FUNCIONARIOS.name: SampleSheet(_employees_sheet, _catalogue_rows(N_EMPLOYEE_ROWS), 104),
    contract.FUNCIONARIOS_FASES_APTOS.name: SampleSheet(_skills_sheet, _catalogue_rows(N_EMPLOYEE_ROWS), 105),
    contract.FASES.name: SampleSheet(_phase_catalogue_sheet, _catalogue_rows(len(PHASES)), 106),
    contract.MODELOS.name: SampleSheet(_products_sheet, _catalogue_rows(N_PRODUCTS), 107),
    contract.FASES_STANDARD_MODELOS.name: SampleSheet(_routes_sheet, _catalogue_rows(N_ROUTE_ROWS), 108),
}


_KIND = {
    ColumnType.INTEGER: xw.INT,
    ColumnType.SMALLINT: xw.INT,
    ColumnType.DECIMAL: xw.DECIMAL,
    ColumnType.TIMESTAMP: xw.DATETIME,
    ColumnType.TEXT: xw.TEXT,
}


# ================================ writing ========================================================


def _ordered_columns(sheet: contract.Sheet, cols: Columns) -> tuple[list, list]:
    """Values and null masks in the contract's column order; required columns never NULL."""
    if set(cols) != set(sheet.headers):
        raise RuntimeError(f"{sheet.name}: generated {sorted(cols)} but the contract has {sheet.headers}")
    values, nulls = [], []
    for column in sheet.columns:
        value = cols[column.header]
        value, null = value if isinstance(value, tuple) else (value, None)
        if null is not None and column.required and np.any(null):
            raise RuntimeError(f"{sheet.name}.{column.header} is required but was generated NULL")
        values.append(np.asarray(value, dtype=object if column.type == ColumnType.TEXT else None))
        nulls.append(null)
    return values, nulls


def _write_sheet(
    book: xw.XlsxWriter, sheet: contract.Sheet, chunks: Iterator[Columns], report: Progress, expected_rows: int
) -> int:
    kinds = [_KIND[c.type] for c in sheet.columns]
    report(f"{sheet.name}: writing ~{expected_rows:,} rows")
    next_report = PROGRESS_EVERY
    zip64 = expected_rows * len(kinds) * XML_BYTES_PER_CELL > ZIP64_ABOVE_BYTES
    with book.sheet(sheet.name, sheet.headers, kinds, zip64=zip64) as out:
        for cols in chunks:
            values, nulls = _ordered_columns(sheet, cols)
            for start in range(0, len(values[0]), WRITE_ROWS):
                part = slice(start, start + WRITE_ROWS)
                out.write_columns([v[part] for v in values], [None if m is None else m[part] for m in nulls])
            if out.rows_written >= next_report:
                report(f"{sheet.name}: {out.rows_written:,} rows")
                next_report = (out.rows_written // PROGRESS_EVERY + 1) * PROGRESS_EVERY
        rows = out.rows_written
    report(f"{sheet.name}: done, {rows:,} rows")
    return rows


def _check_scale(scale: float) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a number, got {scale!r}") from None
    if not 0 < value <= MAX_SCALE:
        raise ValueError(
            f"scale must be greater than 0 and at most {MAX_SCALE:g} (1 = the real export's size), got {scale!r}"
        )
    return value


def write_sample(
    path: str | Path,
    scale: float = 1.0,
    seed: int = 7,
    progress: Callable[[str], None] | None = None,
    link_match_rate: float | None = None,
) -> dict[str, int]:
    """Write a synthetic Folha_IA workbook to ``path``; returns data rows written per sheet.

    ``scale`` 1 is the real export's size (~1.1 M rows); catalogue sheets are full size at any
    scale. The same (scale, seed) always gives the same bytes. The workbook is written to a
    temporary file in the same folder and renamed over ``path`` only once complete.
    ``link_match_rate`` (default: the real 32.3%) is the share of distinct
    ``FuncionarioFaseOf_FaseOfId`` values that exist as phase rows: above 0.9 it makes data on
    which per-employee KPIs are supported.
    """
    scale = _check_scale(scale)
    rate = LINK_ID_MATCH_RATE if link_match_rate is None else float(link_match_rate)
    if not 0 < rate <= 1:
        raise ValueError(f"link_match_rate must be greater than 0 and at most 1, got {link_match_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    path = Path(path)
    report = progress or (lambda message: None)
    cat = _catalogue(seed)
    plan = _plan(cat, scale, seed)
    plan.link_match_rate = rate
    report(f"planned {int((~plan.missing).sum()):,} orders (scale {scale:g}, seed {seed})")
    summary = _summarise_phases(cat, plan)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    counts: dict[str, int] = {}
    try:
        with xw.XlsxWriter(tmp, [s.name for s in contract.SHEETS], null_text=contract.NULL_TEXT) as book:
            for sheet in contract.SHEETS:
                spec = SAMPLE_SHEETS[sheet.name]
                chunks = spec.generate(cat, plan, summary, _rng(seed, spec.stream))
                counts[sheet.name] = _write_sheet(book, sheet, chunks, report, spec.expected_rows(plan, summary))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return counts
