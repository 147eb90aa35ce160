"""The map in CONTRIBUTING.md is true: a module imports only from its own room and the rooms
above it in the rooms table (local imports included: they hid a room importing one below it)."""

from __future__ import annotations

import ast
from pathlib import Path

from prodplan_pipeline_tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "prodplan_pipeline"
# The rooms table of CONTRIBUTING.md, top to bottom; a room on one row may import its row-mates.
ROOMS = [
    {"contract"},
    {"paths", "settings", "plants", "textui", "watermarks"},
    {"workbook"},
    {"warehouse"},
    {"derived"},
    {"ingest"},
    {"quality"},
    {"analytics"},
    {"serving"},
    {"up_to_date", "outcome", "status", "alerts"},
    {"orchestration"},
    {"cli"},
]
RANK = {room: row for row, rooms in enumerate(ROOMS) for room in rooms}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "prodplan_pipeline" and len(parts) > 1 else None


def _imports(path: Path):
    """(line, imported room) for every import of a prodplan_pipeline module in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "prodplan_pipeline":  # from prodplan_pipeline import watermarks
                yield from ((node.lineno, alias.name) for alias in node.names)
            elif _room(node.module):
                yield node.lineno, _room(node.module)
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, _room(a.name)) for a in node.names if _room(a.name))


def test_every_module_is_in_a_room_of_the_map():
    rooms = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.rglob("*.py")}
    assert rooms - {"__init__"} <= set(RANK), f"not in CONTRIBUTING's rooms table: {rooms - set(RANK) - {'__init__'}}"


def test_no_module_imports_a_room_below_its_own():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        wrong += [
            f"{path.relative_to(REPO_ROOT)}:{line}: {own} imports {room}"
            for line, room in _imports(path)
            if RANK[room] > RANK[own]
        ]
    assert wrong == []


def test_the_check_sees_a_downward_import(tmp_path):
    """The check itself: a local import of a lower room is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from prodplan_pipeline.orchestration.launch import run_ingestion\n")
    assert list(_imports(module)) == [(2, "orchestration")]


def test_the_rooms_are_those_of_the_contributing_table_in_its_order():
    import re

    text = (REPO_ROOT / "CONTRIBUTING.md").read_text()
    table = text[text.index("| room | holds |") :].split("\n\n")[0]
    rows = [
        {name.rstrip("/").removesuffix(".py") for name in re.findall(r"`([\w./]+)`", line.split("|")[1])}
        for line in table.splitlines()[2:]
    ]
    assert rows == ROOMS


def test_no_test_module_imports_another():
    """Shared test code lives in helper modules (CONTRIBUTING, Tests): a test module imported by
    another runs its import-time work twice and ties the two modules' fixtures together."""
    tests = REPO_ROOT / "prodplan_pipeline_tests"
    wrong = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.rsplit(".", 1)[-1].startswith("test_"):
                wrong.append(f"{path.name}:{node.lineno}: imports {node.module}")
    assert wrong == []


def _environment_reads(path: Path):
    """(line, variable) for each ``os.environ.get("X")``, ``os.environ["X"]`` or ``os.getenv("X")``
    of a literal name in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        name = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = ast.unparse(node.func)
            if called in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                name = node.args[0].value
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
            if isinstance(node.slice, ast.Constant):
                name = node.slice.value
        if isinstance(name, str):
            yield node.lineno, name


def test_the_projects_variables_are_read_by_settings_alone():
    """Every PRODPLAN_* variable is read in settings.py, into one typed object; the other rooms
    get it from there (or, in Dagster, from the resources)."""
    reads = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "settings.py" or path.parent != PACKAGE
        for line, name in _environment_reads(path)
        if name.startswith("PRODPLAN_")
    ]
    assert reads == []
    assert any(name.startswith("PRODPLAN_") for _, name in _environment_reads(PACKAGE / "settings.py"))


def test_changed_days_are_recorded_by_one_statement():
    """Every writer of ops.changed_days goes through warehouse/changed_days.py (four hand-written
    variants of the INSERT had drifted apart: one cast the run id, one skipped a NULL run)."""
    writers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "INSERT INTO ops.changed_days" in path.read_text()
    )
    assert writers == ["warehouse/changed_days.py"]


DEFERRED_MARKER = "# Deferred imports:"


def _unexplained_local_imports(path: Path) -> list[int]:
    """Lines of function-level imports with no reason given: none on the line, none in a comment
    right above its block of imports, and no module-wide ``# Deferred imports: why`` line."""
    source = path.read_text()
    lines = source.split("\n")
    if any(line.startswith(DEFERRED_MARKER) for line in lines):
        return []
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            if not isinstance(inner, (ast.Import, ast.ImportFrom)):
                continue
            if "#" in lines[inner.lineno - 1]:
                continue
            above = inner.lineno - 2
            while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
                above -= 1
            if above < 0 or not lines[above].strip().startswith("#"):
                found.append(inner.lineno)
    return sorted(set(found))


def test_every_local_import_says_why():
    """An import inside a function hides a dependency from the module's head (and hid rooms
    importing rooms below them): each says why it is deferred (a heavy or optional library not
    every command needs, an import cycle), on its line, in a comment above it, or once for the
    module with a ``# Deferred imports:`` line."""
    unexplained = {
        str(path.relative_to(REPO_ROOT)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := _unexplained_local_imports(path))
    }
    assert unexplained == {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (``from a.b import c`` counts a.b.c
    when that is a module, else a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prodplan_pipeline"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("prodplan_pipeline")}
    return found & known


def test_no_modules_import_each_other():
    """No import cycle between modules, local imports included (connection.py and lost.py once
    imported each other, hidden by local imports)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    graph = {name: _imported_modules(path, known) - {name} for name, path in paths.items()}
    assert "prodplan_pipeline.orchestration.side_run" in graph["prodplan_pipeline.orchestration.launch"]
    packages = {name for name, path in paths.items() if path.name == "__init__.py"}
    cycles, state = [], {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for nxt in sorted(graph[name] - packages):  # a package's __init__ re-exports; not a cycle
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
