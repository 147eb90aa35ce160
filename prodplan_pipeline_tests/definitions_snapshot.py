"""The code location as a data engineer meets it in the Dagster UI, as plain data: every asset
(group, upstream, kinds, owners, partitions, freshness policy, description), check (blocking or not), job, schedule
and sensor. The test compares it with the committed snapshot, so any change to the public shape of
the pipeline shows up as a reviewed diff of one JSON file (regenerate it with
``PRODPLAN_UPDATE_SNAPSHOT=1``)."""

from __future__ import annotations

from dagster import Definitions


def describe(defs: Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    return {
        "assets": {key.to_user_string(): _asset(graph.get(key)) for key in _sorted(graph.get_all_asset_keys())},
        "checks": {key.to_user_string(): _check(graph.get_check_spec(key)) for key in _sorted(graph.asset_check_keys)},
        "jobs": {job.name: _job(defs, job.name) for job in sorted(defs.jobs, key=lambda j: j.name)},
        # the jobs Dagster makes up (a sensor's asset-check runs, the UI's "Materialize")
        "implicit_asset_jobs_executor": defs.resolve_implicit_global_asset_job_def().executor_def.name,
        "schedules": {
            s.name: {
                "cron": s.cron_schedule,
                "timezone": s.execution_timezone,
                "job": s.job_name,
                "default_status": s.default_status.value,
            }
            for s in sorted(defs.schedules, key=lambda s: s.name)
        },
        "sensors": {
            s.name: {
                "type": type(s).__name__,
                "minimum_interval_seconds": s.minimum_interval_seconds,
                "default_status": s.default_status.value,
                "description": s.description,
            }
            for s in sorted(defs.sensors, key=lambda s: s.name)
        },
    }


def _sorted(keys) -> list:
    return sorted(keys, key=lambda k: k.to_user_string())


def _asset(node) -> dict:
    partitions = node.partitions_def
    return {
        "group": node.group_name,
        "upstream": [k.to_user_string() for k in _sorted(node.parent_keys)],
        "kinds": sorted(node.kinds),
        "owners": sorted(node.owners),
        "partitions": None if partitions is None else str(partitions),
        "backfill_policy": None if node.backfill_policy is None else str(node.backfill_policy.policy_type),
        "freshness_fail_window": _fail_window(node.freshness_policy),
        "description": node.description,
    }


def _fail_window(policy) -> str | None:
    return None if policy is None else str(policy.fail_window.to_timedelta())


def _check(spec) -> dict:
    return {
        "blocking": spec.blocking,
        "description": spec.description,
        "additional_deps": [d.asset_key.to_user_string() for d in spec.additional_deps],
    }


def _job(defs: Definitions, name: str) -> dict:
    job = defs.resolve_job_def(name)
    partitions, assets = job.partitions_def, job.asset_layer.executable_asset_keys
    return {
        "description": job.description,
        "executor": job.executor_def.name,
        "partitions": None if partitions is None else str(partitions),
        "assets": sorted(k.to_user_string() for k in assets),
        "ops": [] if assets else sorted(job.graph.node_dict),
    }
