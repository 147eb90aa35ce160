"""The plants are configuration (plants.py, issue 29's first step): declared in one file by
`prodplan plants add` or by hand, listed by `prodplan plants list`, the default plant implicit
when none is declared, every bad declaration refused in one paragraph, and `prodplan ingest
--plant` reading the declaration. The real `prodplan` command runs in a subprocess each time;
none of these commands touches a database, so none is given one.

Pitfall: the plants file is replaced atomically, so the lock that serialises writers is taken on
a file beside it (a lock on the replaced file would be held on an unlinked inode).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from prodplan_pipeline.plants import DEFAULT_PLANT, PlantsError, default_workbook
from prodplan_pipeline.settings import Settings


def prodplan(home: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRODPLAN_")}
    # An unreachable database: a command of these tests that connected would fail loudly.
    env.update(PRODPLAN_HOME=str(home), PRODPLAN_DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "prodplan_pipeline.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def listed(home: Path, **kwargs) -> dict:
    result = prodplan(home, "plants", "list", "--json", **kwargs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_with_no_plant_declared_the_default_plant_reads_prodplan_workbook(tmp_path):
    book = tmp_path / "exports" / "Folha_IA.xlsx"
    found = listed(tmp_path, extra_env={"PRODPLAN_WORKBOOK": str(book)})
    assert found["file"] == str(tmp_path / "plants.yaml")
    assert found["plants"] == [{"id": DEFAULT_PLANT, "workbook": str(book), "declared": False, "exists": False}]
    assert not (tmp_path / "plants.yaml").exists(), "listing declares nothing"


def test_the_first_plant_added_declares_the_default_plant_too(tmp_path):
    served = tmp_path / "served.xlsx"
    served.write_bytes(b"not read by these commands")
    added = prodplan(
        tmp_path, "plants", "add", "north", "--workbook", "north.xlsx", extra_env={"PRODPLAN_WORKBOOK": str(served)}
    )
    assert added.returncode == 0, added.stderr
    assert "declared too" in added.stdout and "does not exist yet" in added.stderr
    plants = {p["id"]: p for p in listed(tmp_path)["plants"]}
    assert list(plants) == [DEFAULT_PLANT, "north"]
    assert plants[DEFAULT_PLANT]["workbook"] == str(served) and plants[DEFAULT_PLANT]["exists"] is True
    # a relative --workbook is the user's, from where the command ran: made absolute
    assert Path(plants["north"]["workbook"]).is_absolute() and plants["north"]["workbook"].endswith("north.xlsx")


def test_adding_a_plant_again_is_idempotent_and_moving_it_is_refused(tmp_path):
    book = tmp_path / "north.xlsx"
    assert prodplan(tmp_path, "plants", "add", "north", "--workbook", str(book)).returncode == 0
    before = (tmp_path / "plants.yaml").read_bytes()
    again = prodplan(tmp_path, "plants", "add", "north", "--workbook", str(book), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["plant"]["workbook"] == str(book)
    assert (tmp_path / "plants.yaml").read_bytes() == before
    moved = prodplan(tmp_path, "plants", "add", "north", "--workbook", str(tmp_path / "other.xlsx"))
    assert moved.returncode == 1
    assert "already declared" in moved.stderr and str(book) in moved.stderr and "other.xlsx" in moved.stderr
    assert (tmp_path / "plants.yaml").read_bytes() == before, "a refusal changes nothing"


@pytest.mark.parametrize("bad_id", ["North", "1st", "a" * 33, "no_underscores", "", "usine-é"])
def test_an_id_that_is_not_a_slug_is_refused(tmp_path, bad_id):
    result = prodplan(tmp_path, "plants", "add", bad_id, "--workbook", str(tmp_path / "x.xlsx"))
    assert result.returncode == 1
    assert "is not a plant id" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "plants.yaml").exists()


def test_a_plants_file_that_cannot_be_reached_is_named_as_a_path(tmp_path):
    home = tmp_path / "home-file"
    home.write_text("not a folder")  # so $PRODPLAN_HOME/plants.yaml cannot exist
    result = prodplan(home, "plants", "list")
    assert result.returncode == 1 and f"{home} is a file, not a folder" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("plants: [\n  - id: north\n", "is not valid YAML (line"),
        ("- north\n- south\n", "must hold a mapping with a list under 'plants'"),
        ("plants:\n  - id: north\n", "plant 1 must have an 'id' and a 'workbook'"),
        ("plants:\n  - {id: Bad, workbook: a.xlsx}\n", "plant 1's id 'Bad' is not a plant id"),
        (
            "plants:\n  - {id: north, workbook: a.xlsx}\n  - {id: north, workbook: b.xlsx}\n",
            "declares the plant 'north' twice",
        ),
    ],
)
def test_a_bad_plants_file_is_named_with_what_is_wrong(tmp_path, content, says):
    plants_file = tmp_path / "conf" / "plants.yaml"
    plants_file.parent.mkdir()
    plants_file.write_text(content)
    result = prodplan(tmp_path, "plants", "list", extra_env={"PRODPLAN_PLANTS": str(plants_file)})
    assert result.returncode == 1
    assert str(plants_file) in result.stderr and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_prodplan_plants_names_the_file_and_a_relative_workbook_is_read_from_its_folder(tmp_path):
    plants_file = tmp_path / "conf" / "plants.yaml"
    plants_file.parent.mkdir()
    plants_file.write_text("plants:\n  - id: default\n    workbook: exports/Folha_IA.xlsx\n")
    found = listed(tmp_path, extra_env={"PRODPLAN_PLANTS": str(plants_file)})
    assert found["file"] == str(plants_file)
    assert found["plants"][0]["workbook"] == str(tmp_path / "conf" / "exports" / "Folha_IA.xlsx")
    settings = Settings.from_env({"PRODPLAN_HOME": str(tmp_path), "PRODPLAN_PLANTS": str(plants_file)})
    assert default_workbook(settings) == tmp_path / "conf" / "exports" / "Folha_IA.xlsx"


def test_plants_added_at_the_same_time_all_land(tmp_path):
    ids = [f"plant-{n}" for n in range(6)]
    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        results = list(
            pool.map(lambda i: prodplan(tmp_path, "plants", "add", i, "--workbook", str(tmp_path / f"{i}.xlsx")), ids)
        )
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    declared = [p["id"] for p in listed(tmp_path)["plants"]]
    assert sorted(declared) == sorted([DEFAULT_PLANT, *ids]) and len(declared) == len(set(declared))


def test_ingest_reads_the_plant_declaration_before_anything_else(tmp_path):
    declared_book = tmp_path / "declared" / "Folha_IA.xlsx"
    plants_file = tmp_path / "plants.yaml"
    plants_file.write_text(
        f"plants:\n  - id: default\n    workbook: {declared_book}\n  - id: north\n    workbook: n.xlsx\n"
    )
    # without --plant: the default plant's declared workbook (it does not exist: named, exit 1)
    default = prodplan(tmp_path, "ingest", extra_env={"PRODPLAN_WORKBOOK": str(tmp_path / "env.xlsx")})
    assert default.returncode == 1 and str(declared_book) in default.stderr, default.stderr
    # a plant that is not declared: refused, the declared ones listed
    unknown = prodplan(tmp_path, "ingest", "--plant", "south")
    assert unknown.returncode == 1
    assert "plant 'south' is not declared" in unknown.stderr and "declared: default, north" in unknown.stderr
    # --plant with --workbook: the plant is still checked (the workbook does not exist either)
    named = prodplan(tmp_path, "ingest", "--plant", "south", "--workbook", str(tmp_path / "other.xlsx"))
    assert named.returncode == 1 and "plant 'south' is not declared" in named.stderr
    chosen = prodplan(tmp_path, "ingest", "--plant", "default", "--workbook", str(tmp_path / "other.xlsx"))
    assert chosen.returncode == 1 and "other.xlsx" in chosen.stderr and str(declared_book) not in chosen.stderr
    # a declared plant other than the default: refused until the warehouse keeps plants apart
    north = prodplan(tmp_path, "ingest", "--plant", "north")
    assert north.returncode == 1 and "does not keep plants apart yet" in north.stderr
    assert "nothing was read" in north.stderr


def test_a_plants_file_without_the_default_plant_names_it_for_what_needs_it(tmp_path):
    plants_file = tmp_path / "plants.yaml"
    plants_file.write_text("plants:\n  - {id: north, workbook: n.xlsx}\n")
    settings = Settings.from_env({"PRODPLAN_HOME": str(tmp_path)})
    with pytest.raises(PlantsError, match=r"plant .default. is not declared in .*\(declared: north\)"):
        default_workbook(settings)
