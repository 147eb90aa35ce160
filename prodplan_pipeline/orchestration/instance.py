"""Wire Dagster's instance to ProdPlan's PostgreSQL, so a user never edits YAML.

``dagster.yaml`` (at the repository root) reads its storage URL from
``PRODPLAN_DAGSTER_STORAGE_URL``; this module resolves that URL (the configured server or the
embedded one, database ``dagster``, created on demand), and prepares ``DAGSTER_HOME``.
"""

from __future__ import annotations

import shutil

from prodplan_pipeline.paths import project_root
from prodplan_pipeline.settings import Settings
from prodplan_pipeline.warehouse.connection import ensure_database, server_url

STORAGE_URL_VARIABLE = "PRODPLAN_DAGSTER_STORAGE_URL"


def dagster_environment(settings: Settings) -> dict[str, str]:
    """Environment variables under which Dagster uses ProdPlan's storage and home."""
    url = server_url(settings, settings.dagster_database)
    ensure_database(url)
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    source = project_root() / "dagster.yaml"
    target = home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)
    return {
        "DAGSTER_HOME": str(home),
        STORAGE_URL_VARIABLE: url.render_as_string(hide_password=False),
        "PRODPLAN_HOME": str(settings.home),
        "PRODPLAN_WORKBOOK": str(settings.workbook_path),
    }
