"""Rows kept but flagged: orphan references and impossible dates, into ``ops.data_quality_issues``.

The table is replaced as a whole on every evaluation (in one transaction), so re-running gives
the same rows. Each issue is one SQL statement: a code, the table, the record's key, a detail.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    code: str
    table: str
    description: str
    select: str  # yields (record_key, detail)


ISSUES = (
    Issue("order_unknown_product", "core.ordens_fabrico",
          "orders whose product is not in Modelos",
          """SELECT o.of_id::text, 'product ' || o.of_produto_id || ' is not in Modelos'
             FROM core.ordens_fabrico o
             WHERE NOT EXISTS (SELECT 1 FROM core.modelos m WHERE m.produto_id = o.of_produto_id)"""),
    Issue("order_finished_before_created", "core.ordens_fabrico",
          "orders finishing before they were created (excluded from lead times)",
          """SELECT of_id::text, 'finished ' || of_data_acabamento || ', created ' || of_data_criacao
             FROM core.ordens_fabrico WHERE of_data_acabamento < of_data_criacao"""),
    Issue("phase_unknown_order", "core.fases_ordem_fabrico",
          "phase rows of orders that are not in OrdensFabrico",
          """SELECT f.fase_of_id::text, 'order ' || f.fase_of_of_id || ' is not in OrdensFabrico'
             FROM core.fases_ordem_fabrico f
             WHERE NOT EXISTS (SELECT 1 FROM core.ordens_fabrico o WHERE o.of_id = f.fase_of_of_id)"""),
    Issue("phase_ends_before_start", "core.fases_ordem_fabrico",
          "phase rows ending before they start (duration left NULL)",
          """SELECT fase_of_id::text, 'ends ' || fase_of_fim || ', starts ' || fase_of_inicio
             FROM core.fases_ordem_fabrico WHERE fase_of_fim < fase_of_inicio"""),
    Issue("defect_unknown_order", "core.erros_ordem_fabrico",
          "defects of orders that are not in OrdensFabrico",
          """SELECT e.row_fingerprint || '#' || e.occurrence, 'order ' || e.erro_of_id || ' is not in OrdensFabrico'
             FROM core.erros_ordem_fabrico e
             WHERE NOT EXISTS (SELECT 1 FROM core.ordens_fabrico o WHERE o.of_id = e.erro_of_id)"""),
    Issue("defect_unknown_inspection_phase", "core.erros_ordem_fabrico",
          "defects whose inspection phase row is not in FasesOrdemFabrico",
          """SELECT e.row_fingerprint || '#' || e.occurrence,
                    'inspection phase row ' || e.erro_fase_of_avaliacao || ' is not in FasesOrdemFabrico'
             FROM core.erros_ordem_fabrico e
             WHERE NOT EXISTS (SELECT 1 FROM core.fases_ordem_fabrico f
                               WHERE f.fase_of_id = e.erro_fase_of_avaliacao)"""),
    Issue("defect_unknown_blamed_phase", "core.erros_ordem_fabrico",
          "defects whose blamed phase row is not in FasesOrdemFabrico",
          """SELECT e.row_fingerprint || '#' || e.occurrence,
                    'blamed phase row ' || e.erro_fase_of_culpada || ' is not in FasesOrdemFabrico'
             FROM core.erros_ordem_fabrico e
             WHERE e.erro_fase_of_culpada IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM core.fases_ordem_fabrico f
                               WHERE f.fase_of_id = e.erro_fase_of_culpada)"""),
    Issue("link_unknown_employee", "core.funcionarios_fase_ordem_fabrico",
          "employee links to employees that are not in Funcionarios",
          """SELECT l.funcionario_fase_of_fase_of_id || '/' || l.funcionario_fase_of_funcionario_id,
                    'employee ' || l.funcionario_fase_of_funcionario_id || ' is not in Funcionarios'
             FROM core.funcionarios_fase_ordem_fabrico l
             WHERE NOT EXISTS (SELECT 1 FROM core.funcionarios u
                               WHERE u.funcionario_id = l.funcionario_fase_of_funcionario_id)"""),
    Issue("link_unknown_phase_row", "core.funcionarios_fase_ordem_fabrico",
          "employee links to phase rows that are not in FasesOrdemFabrico",
          """SELECT l.funcionario_fase_of_fase_of_id || '/' || l.funcionario_fase_of_funcionario_id,
                    'phase row ' || l.funcionario_fase_of_fase_of_id || ' is not in FasesOrdemFabrico'
             FROM core.funcionarios_fase_ordem_fabrico l
             WHERE NOT EXISTS (SELECT 1 FROM core.fases_ordem_fabrico f
                               WHERE f.fase_of_id = l.funcionario_fase_of_fase_of_id)"""),
)


def reconcile_orphans(conn) -> dict[str, int]:
    """Replace ``ops.data_quality_issues`` with the current issues; return counts by code
    (within the caller's transaction, so readers see the old set or the new one)."""
    counts = {}
    with conn.cursor() as cur:
        cur.execute("DELETE FROM ops.data_quality_issues")
        for issue in ISSUES:
            cur.execute(
                f"INSERT INTO ops.data_quality_issues (issue_code, table_name, record_key, detail) "
                f"SELECT %s, %s, k, d FROM ({issue.select}) AS found(k, d)",
                (issue.code, issue.table),
            )
            counts[issue.code] = cur.rowcount
    return counts
