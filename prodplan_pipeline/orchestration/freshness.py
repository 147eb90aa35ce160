"""Freshness: the workbook and the core tables must have been updated by an ingestion within
PRODPLAN_FRESHNESS_HOURS (default 26 h: a daily export plus slack).

Dagster's freshness policies (a time window on each watched asset's spec), evaluated by the
daemon's freshness daemon (``freshness: enabled`` in ``dagster.yaml``), which records each
change of an asset's state as a FRESHNESS_STATE_CHANGE event and shows the state in the UI.
Open-source Dagster does not alert on them by itself: ``check_alert_sensor`` reads those events
beside the failed checks and alerts once per change to FAIL.
"""

from datetime import timedelta

from dagster import FreshnessPolicy, map_asset_specs

from prodplan_pipeline.contract import SHEETS
from prodplan_pipeline.orchestration.ingestion import WORKBOOK_ASSET, core_key

WATCHED = frozenset({WORKBOOK_ASSET, *(core_key(sheet) for sheet in SHEETS)})


def with_freshness_policies(assets: list, hours: float) -> list:
    """``assets`` with a freshness policy of ``hours`` on each watched asset's spec."""
    policy = FreshnessPolicy.time_window(fail_window=timedelta(hours=hours))
    return list(
        map_asset_specs(
            lambda spec: spec.replace_attributes(freshness_policy=policy) if spec.key in WATCHED else spec, assets
        )
    )
