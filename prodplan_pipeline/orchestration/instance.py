"""Wire Dagster's instance to ProdPlan's PostgreSQL, so a user never edits YAML.

The instance is the repository's ``dagster.yaml``, whose storage classes
(``orchestration/storage.py``) find the database the way every ``prodplan`` command does.
``DAGSTER_HOME`` is the folder of that file, so ``dagster dev`` run there (by ``prodplan ui`` or
by hand) finds no second configuration to warn about; Dagster's files go under
``$PRODPLAN_HOME/dagster``.

It also bounds dagster-postgres' connection retries (``bound_storage_retries``): the library
retries every storage connection 5 times with exponential backoff (~12 s each), its storage
config has no setting for it, and a run that lost its server opens several more connections on
the way out (the step's failure, the run's failure ...): 40 s before the error surfaced.
"""

# Deferred imports: Dagster and dagster-postgres load when an instance is opened or bounded, not
# with this module: `dagster_environment` also serves commands that never start Dagster.

from __future__ import annotations

import logging
import time

from prodplan_pipeline.paths import project_root
from prodplan_pipeline.settings import Settings

STORAGE_URL_VARIABLE = "PRODPLAN_DAGSTER_STORAGE_URL"
log = logging.getLogger(__name__)


def dagster_environment(settings: Settings) -> dict[str, str]:
    """Environment variables under which Dagster, from any folder, uses ProdPlan's storage and
    home (resolved now: absolute paths, the storage URL of these settings)."""
    from prodplan_pipeline.orchestration.storage import resolved_storage_url

    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    return {
        "DAGSTER_HOME": str(project_root()),
        STORAGE_URL_VARIABLE: resolved_storage_url(settings),
        "PRODPLAN_HOME": str(settings.home),
        "PRODPLAN_WORKBOOK": str(settings.workbook_path),
    }


def open_instance():
    """The Dagster instance of ``dagster.yaml`` (call after ``dagster_environment`` is applied)."""
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    root = str(project_root())
    return DagsterInstance.from_ref(InstanceRef.from_dir(root, config_dir=root))


def bound_storage_retries(seconds: float) -> None:
    """Make dagster-postgres, in this process, give up on an unreachable server after
    ``seconds`` (PRODPLAN_DB_RETRY_SECONDS) per outage instead of ~12 s per connection."""
    import dagster_postgres.utils as utils
    from dagster_postgres.event_log import event_log
    from dagster_postgres.run_storage import run_storage
    from dagster_postgres.schedule_storage import schedule_storage

    retry = _OutageRetries(seconds)
    # create_pg_connection looks the name up in utils at each call; the storages' constructors
    # use the names they imported.
    for module in (utils, event_log, run_storage, schedule_storage):
        module.retry_pg_connection_fn = retry


class _OutageRetries:
    """dagster-postgres' retry_pg_connection_fn (same arguments, errors and backoff) with one
    deadline per outage: the first connection that fails retries for up to ``seconds``; while the
    server still does not answer, later ones get a single attempt. The first success ends the
    outage. A restart within ``seconds`` goes unnoticed; a dead server costs ``seconds``, once."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.failing_since: float | None = None

    def __call__(self, fn, retry_limit: int = 5, retry_wait: float = 0.2):
        import sqlalchemy.exc
        from dagster_postgres.utils import DagsterPostgresException

        attempt = 0
        while True:
            attempt += 1
            try:
                result = fn()
            except (sqlalchemy.exc.DatabaseError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError) as exc:
                delay = self._next_delay(attempt, retry_limit, retry_wait)
                if delay is None:
                    raise DagsterPostgresException("too many retries for DB connection") from exc
                # not the library's root-logger warning: the terminal gets one paragraph
                log.debug("retrying Dagster's storage connection in %.1f s: %s", delay, exc)
                time.sleep(delay)
            else:
                self.failing_since = None
                return result

    def _next_delay(self, attempt: int, retry_limit: int, retry_wait: float) -> float | None:
        from dagster._core.definitions.policy import Backoff, Jitter, calculate_delay

        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        left = self.failing_since + self.seconds - now
        if attempt > retry_limit or left <= 0:
            return None
        delay = calculate_delay(
            attempt_num=attempt, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS, base_delay=retry_wait
        )
        return max(0.0, min(left, delay))
