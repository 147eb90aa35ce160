"""The ``PRODPLAN_*`` environment, read in one place into one typed settings object."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

DEFAULT_HOME = ".prodplan"


def home_as_given() -> Path:
    """PRODPLAN_HOME as set (else the default), unchecked: where a crash log goes, which must
    work when the error being logged comes from ``Settings`` itself."""
    return Path(os.path.abspath(os.path.expanduser(os.environ.get("PRODPLAN_HOME", "").strip() or DEFAULT_HOME)))


SAMPLE_WORKBOOK_NAME = "Folha_IA.sample.xlsx"


class SettingError(ValueError):
    """A ``PRODPLAN_*`` variable or option value that cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None = None
    workbook: Path | None = None
    reports_dir: Path | None = None
    plants_file: Path | None = None  # where the plants are declared (plants.py); default: under home
    redis_url: str | None = None
    alert_webhook_url: str | None = None
    api_key: str | None = None
    dagster_database: str = "dagster"  # Dagster's own storage, on the warehouse's server
    dagster_storage_url: str | None = None  # or Dagster's storage anywhere else
    cache_version_ttl: float = 1.0  # seconds an API process trusts its copy of the cache version
    api_cache: bool = True  # False only for the API benchmark's uncached baseline
    api_metrics: bool = True  # GET /metrics and its counting; off for the benchmark's cost figure
    db_retry_seconds: float = 5.0  # how long Dagster's storage retries a server that stopped answering
    max_shrink: float = 0.20  # the largest share of a sheet's rows one snapshot may delete
    exports_keep: int = 5  # private copies of ingested exports kept under $PRODPLAN_HOME/exports
    max_uncompressed_mb: int = 384  # a workbook's XML, uncompressed: ~2x the real export (182 MiB)
    freshness_hours: float = 26.0  # a daily export, plus slack: older than this and the assets are stale
    alert_interval_seconds: int = 30  # how often the alert sensors look for failed runs and checks
    partitions_start: date = date(2020, 1, 1)  # the first day of the daily partitions

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        home = _absolute(get("PRODPLAN_HOME") or DEFAULT_HOME)
        workbook = get("PRODPLAN_WORKBOOK")
        reports = get("PRODPLAN_REPORTS_DIR")
        plants = get("PRODPLAN_PLANTS")
        return cls(
            home=home,
            database_url=get("PRODPLAN_DATABASE_URL"),
            workbook=_absolute(workbook) if workbook else None,
            reports_dir=_absolute(reports) if reports else None,
            plants_file=_absolute(plants) if plants else None,
            redis_url=get("PRODPLAN_REDIS_URL"),
            alert_webhook_url=get("PRODPLAN_ALERT_WEBHOOK_URL"),
            api_key=get("PRODPLAN_API_KEY"),
            dagster_database=get("PRODPLAN_DAGSTER_DATABASE") or "dagster",
            dagster_storage_url=get("PRODPLAN_DAGSTER_STORAGE_URL"),
            cache_version_ttl=_seconds("PRODPLAN_CACHE_VERSION_TTL", get("PRODPLAN_CACHE_VERSION_TTL"), 1.0),
            api_cache=(get("PRODPLAN_API_CACHE") or "on").lower() != "off",
            api_metrics=(get("PRODPLAN_API_METRICS") or "on").lower() != "off",
            db_retry_seconds=_seconds("PRODPLAN_DB_RETRY_SECONDS", get("PRODPLAN_DB_RETRY_SECONDS"), 5.0),
            max_shrink=fraction("PRODPLAN_MAX_SHRINK", get("PRODPLAN_MAX_SHRINK"), 0.20),
            exports_keep=_count("PRODPLAN_EXPORTS_KEEP", get("PRODPLAN_EXPORTS_KEEP"), 5),
            max_uncompressed_mb=_count("PRODPLAN_MAX_UNCOMPRESSED_MB", get("PRODPLAN_MAX_UNCOMPRESSED_MB"), 384),
            freshness_hours=_hours("PRODPLAN_FRESHNESS_HOURS", get("PRODPLAN_FRESHNESS_HOURS"), 26.0),
            alert_interval_seconds=_count(
                "PRODPLAN_ALERT_INTERVAL_SECONDS", get("PRODPLAN_ALERT_INTERVAL_SECONDS"), 30
            ),
            partitions_start=_day("PRODPLAN_PARTITIONS_START", get("PRODPLAN_PARTITIONS_START"), date(2020, 1, 1)),
        )

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def exports(self) -> Path:
        return self.home / "exports"

    @property
    def max_uncompressed(self) -> int:
        """``max_uncompressed_mb`` in bytes, as ``workbook.inspect.inspect_workbook`` takes it."""
        return self.max_uncompressed_mb * 2**20

    @property
    def reports(self) -> Path:
        return self.reports_dir or self.home / "reports"

    @property
    def plants_path(self) -> Path:
        """The file that declares the plants: ``PRODPLAN_PLANTS``, else ``$PRODPLAN_HOME/plants.yaml``."""
        return self.plants_file or self.home / "plants.yaml"

    @property
    def workbook_path(self) -> Path:
        """The workbook to ingest: ``PRODPLAN_WORKBOOK``, else the generated sample."""
        return self.workbook or self.home / "workbooks" / SAMPLE_WORKBOOK_NAME


def _absolute(text: str) -> Path:
    """``text`` as an absolute path with its links resolved, like ``Path.resolve()``, except that
    a symlink loop is left as it is (``resolve`` raises RuntimeError on one): the command that
    uses the path then names the loop in its message."""
    return Path(os.path.realpath(Path(text).expanduser()))


def _seconds(name: str, text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingError(f"{name} must be a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise SettingError(f"{name} must be zero or more seconds, got {text!r}")
    return value


MIN_FRESHNESS_HOURS = 1 / 60  # Dagster's freshness policies take no window under a minute


def _hours(name: str, text: str | None, default: float) -> float:
    value = _seconds(name, text, default)  # the same parsing; the unit only changes the words
    if value < MIN_FRESHNESS_HOURS:
        raise SettingError(f"{name} must be a number of hours, at least one minute (0.0167), got {text!r}")
    return value


def _day(name: str, text: str | None, default: date) -> date:
    if text is None:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SettingError(f"{name} must be a date as YYYY-MM-DD, got {text!r}") from None


def fraction(name: str, text: str | None, default: float) -> float:
    """A share between 0 and 1 (``name`` says where it came from, for the message)."""
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingError(f"{name} must be a fraction between 0 and 1 (e.g. 0.35), got {text!r}") from None
    if not 0 <= value <= 1:
        raise SettingError(f"{name} must be a fraction between 0 and 1 (e.g. 0.35), got {text!r}")
    return value


def _count(name: str, text: str | None, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise SettingError(f"{name} must be a whole number of at least 1, got {text!r}")
    return int(text)
