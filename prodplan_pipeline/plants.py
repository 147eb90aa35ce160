"""The plants ProdPlan serves, declared in one file: each an id and the workbook its ERP exports.

The file is ``$PRODPLAN_HOME/plants.yaml``, or the one ``PRODPLAN_PLANTS`` names (a deployment
mounts it there)::

    plants:
      - id: north
        workbook: /exports/north/Folha_IA.xlsx
      - id: south
        workbook: /exports/south/Folha_IA.xlsx

With no file, or one that declares no plant, ProdPlan serves a single plant, ``default``, whose
workbook is ``PRODPLAN_WORKBOOK`` (else the generated sample): exactly what it did before plants
existed. ``prodplan plants add`` writes the file; the first one declares ``default`` too, with
that workbook, so a warehouse that already holds the default plant's data keeps serving it.

An id is a short slug (lowercase letters, digits and hyphens, starting with a letter, at most 32
characters): it becomes a Dagster partition key, a key column's value and an API parameter.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from prodplan_pipeline.settings import SettingError, Settings

DEFAULT_PLANT = "default"
PLANT_ID = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
PLANT_ID_RULE = "a lowercase letter, then lowercase letters, digits or hyphens; at most 32 characters"
HEADER = """\
# The plants ProdPlan serves: an id (a slug) and the workbook its ERP exports, one entry each.
# Written by `prodplan plants add`; edit it by hand as well (a relative workbook path is read
# from this file's folder). With no plant declared, ProdPlan serves one plant, `default`, whose
# workbook is PRODPLAN_WORKBOOK (else the generated sample).
"""


class PlantsError(SettingError):
    """A plants file that cannot be used, or a plant that is not declared: the message says which
    and what to do."""


@dataclass(frozen=True)
class Plant:
    id: str
    workbook: Path
    declared: bool = True  # False: the implicit default plant (no plant declared in the file)


def check_plant_id(plant_id: str) -> str:
    if not PLANT_ID.match(plant_id):
        raise PlantsError(f"{plant_id!r} is not a plant id: {PLANT_ID_RULE}")
    return plant_id


def declared_plants(settings: Settings) -> list[Plant]:
    """The plants in the order the file declares them; the implicit default plant when none is."""
    plants = _read(settings.plants_path)
    return plants or [Plant(DEFAULT_PLANT, settings.workbook_path, declared=False)]


def find_plant(settings: Settings, plant_id: str) -> Plant:
    """The declared plant ``plant_id``; the message of a refusal lists the declared ones."""
    check_plant_id(plant_id)
    plants = declared_plants(settings)
    for plant in plants:
        if plant.id == plant_id:
            return plant
    raise PlantsError(
        f"plant {plant_id!r} is not declared in {settings.plants_path} (declared: "
        f"{', '.join(p.id for p in plants)}); declare it with `prodplan plants add {plant_id} --workbook PATH`"
    )


def default_workbook(settings: Settings) -> Path:
    """The default plant's workbook: as the plants file declares it, else ``PRODPLAN_WORKBOOK``
    (else the sample). What the workbook sensor watches and an ingestion without a plant reads."""
    return find_plant(settings, DEFAULT_PLANT).workbook


def add_plant(settings: Settings, plant_id: str, workbook: Path) -> tuple[Plant, list[Plant]]:
    """Declare ``plant_id`` with ``workbook`` (absolute); adding a plant again with the same
    workbook changes nothing. Returns the plant and the plants declared now. The file is
    rewritten whole under a lock and replaced atomically: two `plants add` at once both land,
    and a reader never sees half a file."""
    check_plant_id(plant_id)
    workbook = Path(os.path.abspath(workbook.expanduser()))
    path = settings.plants_path
    with _locked(path):
        plants = _read(path)
        existing = next((p for p in plants if p.id == plant_id), None)
        if existing is not None:
            if existing.workbook != workbook:
                raise PlantsError(
                    f"plant {plant_id!r} is already declared in {path} with the workbook {existing.workbook}, "
                    f"not {workbook}; to move it, edit that file"
                )
            return existing, plants
        if not plants and plant_id != DEFAULT_PLANT:  # the data served so far stays a plant's
            plants.append(Plant(DEFAULT_PLANT, Path(os.path.abspath(settings.workbook_path))))
        plant = Plant(plant_id, workbook)
        plants.append(plant)
        _write(path, plants)
    return plant, plants


def _read(path: Path) -> list[Plant]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as error:
        raise PlantsError(f"the plants file {path} cannot be read: {error}") from None
    # Any other OSError goes up as it is: the CLI names a path that cannot be used (a home that
    # is a file, a folder without permission) the way it names every other one.
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise PlantsError(
            f"the plants file {path} is not valid YAML{line}: {getattr(error, 'problem', None) or _first_line(error)}"
        ) from None
    if document is None:
        return []
    if not isinstance(document, dict) or not isinstance(document.get("plants", []), list):
        raise PlantsError(f"the plants file {path} must hold a mapping with a list under 'plants'")
    plants, seen = [], set()
    for number, entry in enumerate(document.get("plants") or [], start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry.get("workbook"):
            raise PlantsError(f"the plants file {path}: plant {number} must have an 'id' and a 'workbook'")
        plant_id = entry["id"]
        if not PLANT_ID.match(plant_id):
            raise PlantsError(
                f"the plants file {path}: plant {number}'s id {plant_id!r} is not a plant id: {PLANT_ID_RULE}"
            )
        if plant_id in seen:
            raise PlantsError(f"the plants file {path} declares the plant {plant_id!r} twice")
        seen.add(plant_id)
        workbook = Path(str(entry["workbook"])).expanduser()
        plants.append(Plant(plant_id, workbook if workbook.is_absolute() else path.parent / workbook))
    return plants


def _write(path: Path, plants: list[Plant]) -> None:
    body = yaml.safe_dump(
        {"plants": [{"id": p.id, "workbook": str(p.workbook)} for p in plants]}, sort_keys=False, allow_unicode=True
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".plants-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(HEADER + body)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on a file beside the plants file (the plants file itself is replaced,
    so a lock on it would be held on an unlinked file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
