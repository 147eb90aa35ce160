"""Alert payloads and their delivery to a Slack-compatible webhook, free of Dagster so it is
testable on its own. Payloads are plain dicts: the same dict is logged as JSON and posted."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from prodplan_pipeline.warehouse.lost import database_lost_message

log = logging.getLogger("prodplan.alerts")


def format_check_alert(
    *,
    check_name: str,
    asset: str,
    severity: str,
    passed: bool = False,
    blocking: bool | None = None,
    description: str | None = None,
    run_id: str | None = None,
    timestamp: float | None = None,
    partition: str | None = None,
) -> dict[str, Any]:
    """A failed asset check evaluation as an alert payload (``text`` is what Slack shows)."""
    text = f":warning: check `{asset}:{check_name}` failed ({severity}"
    text += ", blocking)" if blocking else ")"
    if partition:
        text += f" on partition {partition}"
    if description:
        text += f": {description}"
    if run_id:
        text += f" (run {run_id})"
    return {
        "text": text,
        "kind": "asset_check_failed",
        "check_key": f"{asset}:{check_name}",
        "check_name": check_name,
        "asset": asset,
        "severity": severity,
        "blocking": blocking,
        "passed": passed,
        "description": description,
        "partition": partition,
        "run_id": run_id,
        "timestamp": timestamp,
    }


def format_freshness_alert(*, asset: str, hours: float, timestamp: float | None = None) -> dict[str, Any]:
    """An asset whose freshness policy failed (no update within ``hours``) as an alert payload."""
    return {
        "text": f":hourglass: `{asset}` is stale: no ingestion updated it within {hours:g} h",
        "kind": "freshness_failed",
        "asset": asset,
        "hours": hours,
        "timestamp": timestamp,
    }


def format_run_failure_alert(
    *, job_name: str, run_id: str, message: str | None, timestamp: float | None = None
) -> dict[str, Any]:
    """A failed Dagster run as an alert payload."""
    text = f":rotating_light: run of `{job_name}` failed (run {run_id})"
    if message:
        text += f": {message}"
    return {
        "text": text,
        "kind": "run_failed",
        "job_name": job_name,
        "run_id": run_id,
        "message": message,
        "timestamp": timestamp,
    }


def to_log_line(payload: dict[str, Any]) -> str:
    """One structured line: grep-able prefix, then the payload as compact JSON."""
    return "prodplan-alert " + json.dumps(payload, sort_keys=True, default=str)


def post_webhook(
    url: str, payload: dict[str, Any], attempts: int = 3, backoff: float = 0.5, timeout: float = 5
) -> bool:
    """POST ``payload`` as JSON; retry with exponential backoff (``backoff``, 2x, 4x ... seconds
    between attempts). True when a 2xx answer came back. Never raises: a sensor must survive a
    down or misconfigured webhook, so every failure is logged and reported as False."""
    body = json.dumps(payload, default=str).encode()
    for attempt in range(1, attempts + 1):
        try:
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if 200 <= response.status < 300:
                    return True
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:  # a non-2xx answer: retrying a 4xx rarely helps,
            problem = f"HTTP {error.code}"  # but 429/5xx do, and attempts are few anyway
        except Exception as error:  # noqa: BLE001 - connection refused, timeout, bad URL ...
            problem = f"{type(error).__name__}: {error}"
        log.warning("alert webhook attempt %d/%d failed: %s", attempt, attempts, problem)
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    log.error("alert webhook gave up after %d attempts; alert not delivered: %s", attempts, payload.get("text"))
    return False


def step_failure_text(step_failure, settings=None) -> str:
    """What a failed step (its STEP_FAILURE event) tells a person, the same in `prodplan
    ingest`'s error and in the run-failure alert: its Failure's description (the pipeline's
    one-paragraph refusals), else the lost-database paragraph, else the innermost cause of its
    error."""
    data = step_failure.step_failure_data
    if data.user_failure_data and data.user_failure_data.description:
        return data.user_failure_data.description
    lost = database_lost_message(data.error, settings)  # the whole chain: the cause may be a context
    if lost:
        return lost
    cause = root_cause(data.error)
    return f"step {step_failure.step_key} failed" + (f": {cause.message.strip()}" if cause else "")


def root_cause(error):
    """The innermost cause of a Dagster error record (``SerializableErrorInfo``): Dagster wraps
    the user code's exception, and that exception is what the reader needs."""
    while error is not None and error.cause is not None:
        error = error.cause
    return error
