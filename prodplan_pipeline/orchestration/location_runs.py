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

from prodplan_pipeline.paths import project_root

DEFINITIONS_MODULE = "prodplan_pipeline.orchestration.definitions"
DEFINITIONS_ATTRIBUTE = "defs"


@cache
def _repository_origin():
    from dagster._core.definitions.repository_definition.valid_definitions import SINGLETON_REPOSITORY_NAME
    from dagster._core.remote_origin import RemoteRepositoryOrigin
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    (location,) = WorkspaceFileTarget([str(project_root() / "workspace.yaml")]).create_origins()
    return RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME)


def location_name() -> str:
    return _repository_origin().code_location_origin.location_name


def run_job(instance, job_name: str, *, run_config: dict, tags: dict, asset_selection=None):
    """Execute ``job_name`` of the code location here, as a run the UI and the daemon's
    sensors treat like one the daemon launched. Returns Dagster's JobExecutionResult."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.execution.api import execute_run

    repository = ReconstructableRepository.for_module(
        DEFINITIONS_MODULE, DEFINITIONS_ATTRIBUTE, working_directory=os.getcwd())
    job = repository.get_reconstructable_job(job_name)
    selection = frozenset(asset_selection) if asset_selection else None
    run = instance.create_run_for_job(
        job_def=job.get_definition(), run_config=run_config, tags=tags, asset_selection=selection,
        remote_job_origin=_repository_origin().get_job_origin(job_name),
        job_code_origin=job.get_python_origin())
    return execute_run(job, run, instance)
