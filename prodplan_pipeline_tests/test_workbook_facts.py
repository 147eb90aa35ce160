"""The independent facts the tests about the real export compare with: computed from the file by
two readers that must agree, and equal to the shared sample's own facts file when it is there."""

from __future__ import annotations

import json

from prodplan_pipeline_tests.conftest import SHARED_SAMPLE
from prodplan_pipeline_tests.workbook_facts import compute_facts, read_frames


def test_two_readers_give_the_same_facts(real_sample):
    assert compute_facts(read_frames(real_sample.path, engine="openpyxl")) == real_sample.facts


def test_the_facts_hold_the_real_quirks(real_sample):
    """Whichever workbook the tests use, it carries the quirks they are about."""
    facts = real_sample.facts
    assert all(
        facts["phases"][quirk] > 0 for quirk in ("fim_lt_inicio_rows", "open_phases_fim_null", "orphan_ofid_rows")
    )
    assert facts["sheets"]["Funcionarios"]["exact_duplicate_rows"] > 0
    assert facts["match_rates"]["ffo_faseofid_distinct_in_faseof_id"]["rate"] < 0.9
    if SHARED_SAMPLE.exists():  # the real sample: its facts file was computed by others
        shared = json.loads(SHARED_SAMPLE.with_suffix(".facts.json").read_text())
        assert (facts["sheets"], facts["match_rates"]) == (shared["sheets"], shared["match_rates"])
        assert facts["phases"] == {k: shared["phases"][k] for k in facts["phases"]}
