"""Freshness: the workbook and the core tables must have been updated by an ingestion within
PRODPLAN_FRESHNESS_HOURS (default 26 h: a daily export plus slack).

Dagster's open-source last-update freshness checks, evaluated by their sensor (and by every
ingestion run, which materializes the assets they watch). A failed freshness check is an asset
check evaluation like any other, so ``check_alert_sensor`` alerts on it.
"""

import warnings
from datetime import timedelta

from dagster import (
    DefaultSensorStatus,
    SupersessionWarning,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
)

from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.orchestration.ingestion import WORKBOOK_ASSET, core_key

FRESHNESS_SENSOR = "freshness_checks_sensor"
FRESHNESS_SENSOR_INTERVAL_SECONDS = 300  # the checks' own bound is hours; a tick costs a query


def freshness_definitions(hours: float):
    """(the freshness checks, the sensor that evaluates them) for a bound of ``hours``."""
    # Dagster 1.13 calls these superseded by FreshnessPolicy; the checks are what open-source
    # Dagster evaluates and alerts on through the ordinary check machinery, so they stay.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SupersessionWarning)
        return _build(hours)


def _build(hours: float):
    checks = build_last_update_freshness_checks(
        assets=[WORKBOOK_ASSET, *(core_key(sheet) for sheet in SHEETS)],
        lower_bound_delta=timedelta(hours=hours))
    sensor = build_sensor_for_freshness_checks(
        freshness_checks=checks, name=FRESHNESS_SENSOR,
        minimum_interval_seconds=FRESHNESS_SENSOR_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING)
    return list(checks), sensor
