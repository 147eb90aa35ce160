"""Where the project's own files (``sql/``, ``dagster.yaml``, ``workspace.yaml``) are found.

In a source checkout (``pip install -e .``) they sit at the repository root; a regular install
carries them under ``<prefix>/share/prodplan`` (see ``data_files`` in setup.py).
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

_MARKER = "workspace.yaml"


@cache
def project_root() -> Path:
    candidates = (Path(__file__).resolve().parents[1], Path(sys.prefix) / "share" / "prodplan")
    for root in candidates:
        if (root / _MARKER).is_file() and (root / "sql").is_dir():
            return root
    raise FileNotFoundError(
        "ProdPlan's project files (sql/, workspace.yaml) were not found next to the package "
        f"or under {candidates[1]}; reinstall with `pip install -e .` from the repository."
    )


def sql_dir() -> Path:
    return project_root() / "sql"


def migrations_dir() -> Path:
    return sql_dir() / "migrations"
