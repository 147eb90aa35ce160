"""Runs that `prodplan` executes in its own process, recorded as runs of the code location.

A run made by ``execute_in_process`` carries no code-location origin: the UI cannot re-execute
it, and run-status sensors (the run-failure alert among them) skip it as "not of this
location". Here the run is created with the origin the workspace gives the location (read from
``workspace.yaml`` without starting its code server) and with the job's Python origin, then
executed in this process, as Dagster's own ``execute_job`` does.
"""

from __future__ import annotations

import os
from functools import cache

from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.remote_origin import RemoteRepositoryOrigin
from dagster._core.snap import snapshot_from_execution_plan
from dagster._core.workspace.load_target import WorkspaceFileTarget

from prodplan_pipeline.paths import project_root

DEFINITIONS_MODULE = "prodplan_pipeline.orchestration.definitions"
DEFINITIONS_ATTRIBUTE = "defs"


@cache
def _repository_origin():
    (location,) = WorkspaceFileTarget([str(project_root() / "workspace.yaml")]).create_origins()
    return RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME)


def location_name() -> str:
    return _repository_origin().code_location_origin.location_name


def _reconstructable_job(job_name: str):
    return ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE, working_directory=os.getcwd()
    ).get_reconstructable_job(job_name)


def job_definition(job_name: str):
    """The JobDefinition of ``job_name`` in the code location."""
    return _reconstructable_job(job_name).get_definition()


def run_job(instance, job_name: str, *, run_config: dict, tags: dict, asset_selection=None, asset_check_selection=None):
    """Execute ``job_name`` of the code location here, as a run the UI and the daemon's
    sensors treat like one the daemon launched; ``asset_selection`` and
    ``asset_check_selection`` (sets of keys) run a subset of it. Returns Dagster's
    JobExecutionResult."""
    job = _reconstructable_job(job_name)
    assets = frozenset(asset_selection) if asset_selection else None
    checks = frozenset(asset_check_selection) if asset_check_selection is not None else None
    job_def = job.get_definition()
    if assets is not None or checks is not None:
        job_def = job_def.get_subset(asset_selection=assets, asset_check_selection=checks)
    # As DagsterInstance.create_run_for_job does, which has no check selection: without one a
    # subset runs every check of its assets.
    plan = create_execution_plan(
        job_def, run_config=run_config, tags=tags, instance_ref=instance.get_ref() if instance.is_persistent else None
    )
    run = instance.create_run(
        job_name=job_name,
        run_id=None,
        run_config=run_config,
        status=None,
        tags=tags,
        root_run_id=None,
        parent_run_id=None,
        step_keys_to_execute=plan.step_keys_to_execute,
        execution_plan_snapshot=snapshot_from_execution_plan(plan, job_def.get_job_snapshot_id()),
        job_snapshot=job_def.get_job_snapshot(),
        parent_job_snapshot=job_def.get_parent_job_snapshot(),
        asset_selection=assets,
        asset_check_selection=checks,
        resolved_op_selection=None,
        op_selection=None,
        remote_job_origin=_repository_origin().get_job_origin(job_name),
        job_code_origin=job.get_python_origin(),
        asset_graph=job_def.asset_layer.asset_graph,
    )
    return execute_run(job, run, instance)
