"""Each registry is the one place its kind of thing is declared: an entry added to it (in a fresh
interpreter, before anything reads the registry) appears in every consumer derived from it, and
the consumers that are written by hand (the README's table, the SQL view of the API's labels)
are held to it by a test that the new entry would fail.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prodplan_pipeline_tests.conftest import REPO_ROOT

PROBE = """
import dataclasses, json, sys
from prodplan_pipeline.analytics import aggregates, current
from prodplan_pipeline.quality import gates

kind = sys.argv[1]
if kind == "aggregate":
    probe = dataclasses.replace(aggregates.QUALITY, table="analytics.agg_probe_daily", description="Probe rows.")
    aggregates.AGGREGATES[probe.table] = probe
    readme_row = probe.readme_row()
elif kind == "current_layer":
    probe = dataclasses.replace(current.WIP, table="analytics.probe_current", description="Probe rows.")
    current.CURRENT_LAYERS[probe.table] = probe
    readme_row = None
else:
    probe = dataclasses.replace(gates.QUALITY_BY_ORDER, feature="probe_feature")
    gates.GATES = (*gates.GATES, probe)
    readme_row = None

from prodplan_pipeline.analytics.convergence import LAYERS
from prodplan_pipeline.orchestration.analytics import UNPARTITIONED
from prodplan_pipeline.orchestration.definitions import defs
from prodplan_pipeline_tests.definitions_snapshot import describe

described = describe(defs)
print(json.dumps({
    "assets": described["assets"],
    "checks": described["checks"],
    "refresh_job": described["jobs"]["refresh_daily_aggregates"]["assets"],
    "layers": list(LAYERS),
    "unpartitioned": [key.to_user_string() for key in UNPARTITIONED],
    "readme_row": readme_row,
}))
"""


def probe(kind: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, kind], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["aggregate", "current_layer", "gate"])
def test_an_entry_added_to_a_registry_reaches_every_consumer(kind):
    found = probe(kind)
    readme = (REPO_ROOT / "README.md").read_text()
    if kind == "aggregate":
        asset = found["assets"]["analytics/agg_probe_daily"]
        assert asset["partitions"].startswith("Daily") and asset["description"].startswith("analytics.agg_probe_daily")
        assert asset["upstream"] == found["assets"]["analytics/agg_quality_daily"]["upstream"]
        assert "analytics/agg_probe_daily" in found["refresh_job"]
        assert "analytics.agg_probe_daily" in found["layers"]  # its watermark: the labels' test demands it
        # held by test_definitions' README test: the row is generated, the README must show it
        assert found["readme_row"] and found["readme_row"] not in readme
    elif kind == "current_layer":
        asset = found["assets"]["analytics/probe_current"]
        assert asset["partitions"] is None and "Replaced whole after each snapshot" in asset["description"]
        assert "analytics/probe_current" in found["refresh_job"]
        assert "analytics/probe_current" in found["unpartitioned"]  # refreshed after every day range
        assert "analytics.probe_current" in found["layers"]
    else:
        check = found["checks"]["quality/feature_gates:gate_probe_feature"]
        assert check["blocking"] is False and "probe_feature" in check["description"]
