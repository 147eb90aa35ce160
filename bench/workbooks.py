"""Workbooks for benchmarks: generated once per (scale, seed) and reused, and edited copies.

Editing a 1.1 M-row workbook with openpyxl takes minutes, so :func:`change_phase_rows` and
:func:`change_phase_mix` rewrite the phase sheet's XML as a stream of rows instead.

The generated phase sheet (inspected at scale 0.1) holds one ``<row r="N">`` per row with its 12
cells in order and no cell references; numbers are plain ``<c><v>2.75</v></c>``, timestamps are
date serials with a date style (``<c s="1"><v>43831.54</v></c>``), and text (the export's literal
``NULL`` in an open phase's FaseOf_Fim) is a shared string (``<c t="s"><v>6</v></c>``); there is
no ``<dimension>``. The edits below also keep the cell references, sparse rows and dimension a
real export carries consistent, should they be present.
"""

from __future__ import annotations

import random
import re
import shutil
import zipfile
from collections import Counter
from pathlib import Path

from prodplan_pipeline.contract import sheet
from prodplan_pipeline.workbook.inspect import inspect_workbook
from prodplan_pipeline.workbook.sample import write_sample

OUT = Path(__file__).resolve().parent / "out"
PHASES = "FasesOrdemFabrico"
SHARED_STRINGS = "xl/sharedStrings.xml"
_CELL = re.compile(r"<c\b[^>]*?(?:/>|>.*?</c>)", re.S)
_REF = re.compile(r'\br="([A-Z]+)(\d+)"')
_VALUE = re.compile(r"<v>([^<]*)</v>")
MOVE_DAYS = 40  # more than any month: the row's coalesce(Fim, Inicio) lands in another partition


def sample_workbook(scale: float, seed: int = 7, progress=None) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"sample_s{scale:g}_seed{seed}.xlsx"
    if not path.exists():
        write_sample(path, scale=scale, seed=seed, progress=progress)
    return path


def change_phase_rows(
    source: Path, target: Path, share: float, header: str = "FaseOf_Peso", seed: int = 1, days: int | None = None
) -> int:
    """Copy ``source`` with ``share`` of the phase rows given a new ``header`` value; with
    ``days``, the changed rows are taken from that many distinct days only. Returns rows changed."""
    contract = sheet(PHASES)
    column = contract.headers.index(header)
    rng = random.Random(seed)
    changed = 0

    def edit(rows: list[str]) -> None:
        nonlocal changed
        for index in _pick_rows(rows, share, rng, days):
            cells = _cells(rows[index])
            old = cells[column].group(0) if column in cells else ""
            if "<v>" in old:
                new = _number_cell(old, f"{rng.randint(5, 40)}.5")
                rows[index] = _splice(rows[index], cells, {column: new})
                changed += new != old

    _rewrite_part(source, target, PHASES, edit)
    return changed


def change_phase_mix(
    source: Path, target: Path, share: float = 0.01, appended: int = 50, seed: int = 1, recount_shared: bool = False
) -> dict[str, int]:
    """Copy ``source`` with ``share`` of the phase rows changed the ways a day's export changes
    them: most get a new FaseOf_Peso (updated in place), ~10% an end 40 days later (the row moves
    to another monthly partition), at least one open phase is closed (end = start + 1 day); and
    ``appended`` new phases follow (copies of existing rows under new ids above the largest).
    Returns how many rows of each kind.

    The shared-string table's count (references to it; advisory, no reader checks it) is left as
    it was unless ``recount_shared``, as Excel would save it: every sheet's content hash covers
    that part, so recounting makes every sheet look changed and re-read, not just this one."""
    headers = sheet(PHASES).headers
    key, start, end, weight = (headers.index(h) for h in ("FaseOf_Id", "FaseOf_Inicio", "FaseOf_Fim", "FaseOf_Peso"))
    rng = random.Random(seed)
    null = _shared_string_index(source, "NULL")
    counts = {"weight": 0, "moved": 0, "closed": 0, "appended": 0}
    shared_delta = 0  # shared-string references added (copies) or removed (closed NULLs)

    def edit(rows: list[str]) -> None:
        nonlocal shared_delta
        data = range(1, len(rows) - 1)  # row 0 is the header; the last piece is the sheet's tail
        keys, ended = {}, set()
        for i in data:
            cells = _cells(rows[i])
            keys[i] = _number(cells.get(key))
            if not _is_open(cells.get(end), null):
                ended.add(i)
        # A repeated key is collapsed (or rejected) by the merge: edit only rows whose key is unique.
        repeats = Counter(keys.values())
        unique = [i for i in data if keys[i] is not None and repeats[keys[i]] == 1]
        total = max(1, int(len(data) * share))
        opened = [i for i in unique if i not in ended]
        closing = rng.sample(opened, min(len(opened), max(1, total // 100)))
        moving = rng.sample([i for i in unique if i in ended], max(1, total // 10))
        taken = set(closing) | set(moving)
        weighing = rng.sample([i for i in unique if i not in taken], total - len(closing) - len(moving))
        for i in weighing:
            counts["weight"] += _edit_weight(rows, i, weight, rng)
        for i in moving:
            counts["moved"] += _edit_number(rows, i, end, lambda v: v + MOVE_DAYS)
        for i in closing:
            shared_delta -= rows[i].count('t="s"')
            counts["closed"] += _close(rows, i, start, end)
            shared_delta += rows[i].count('t="s"')
        first_id = int(max(k for k in keys.values() if k is not None)) + 1
        after = (_row_number(rows[-2]) or len(data) + 1) + 1
        copies = [_renumbered(rows[rng.choice(unique)], after + n, key, first_id + n) for n in range(appended)]
        shared_delta += sum(row.count('t="s"') for row in copies)
        rows[-1:] = [*copies, rows[-1]]
        counts["appended"] = len(copies)

    def head(text: str, rows: int) -> str:  # the <dimension>, when present, spans the new rows
        return re.sub(r'(<dimension ref="[A-Z]+\d+:[A-Z]+)\d+"', rf'\g<1>{rows}"', text, count=1)

    _rewrite_part(
        source,
        target,
        PHASES,
        edit,
        head=head,
        shared=(lambda xml: _shift_count(xml, shared_delta)) if recount_shared else None,
    )
    return counts


def _edit_weight(rows: list[str], index: int, column: int, rng: random.Random) -> int:
    def new(value: float) -> float:
        while (candidate := rng.randint(5, 40) + 0.5) == value:
            pass
        return candidate

    return _edit_number(rows, index, column, new)


def _edit_number(rows: list[str], index: int, column: int, change) -> int:
    """Give cell ``column`` of row ``index`` the number ``change(old)``; 1 if the row changed."""
    cells = _cells(rows[index])
    old = _number(cells.get(column))
    if old is None:
        return 0
    rows[index] = _splice(rows[index], cells, {column: _number_cell(cells[column].group(0), _text(change(old)))})
    return 1


def _close(rows: list[str], index: int, start: int, end: int) -> int:
    """End the open phase of row ``index`` a day after its start, in the start's date style."""
    cells = _cells(rows[index])
    began = _number(cells.get(start))
    if began is None:
        return 0
    style = _attribute(cells[start].group(0), "s")
    if end in cells:
        new = _number_cell(cells[end].group(0), _text(began + 1), style)
    else:  # a sparse row leaves the empty cell out: add one, referenced like its neighbours
        ref = _REF.search(cells[start].group(0))
        new = _number_cell(f'<c r="{_letters(end)}{ref.group(2)}"/>' if ref else "<c/>", _text(began + 1), style)
    rows[index] = _splice(rows[index], cells, {end: new})
    return 1


def _renumbered(row: str, number: int, key: int, new_id: int) -> str:
    """A copy of ``row`` as row ``number`` (its r attribute and cell references) with key ``new_id``."""
    cells = _cells(row)
    row = _splice(row, cells, {key: _number_cell(cells[key].group(0), str(new_id))})
    row = re.sub(r'(<row\b[^>]*?\br=")\d+"', rf'\g<1>{number}"', row, count=1)
    return re.sub(r'(<c\b[^>]*?\br="[A-Z]+)\d+"', rf'\g<1>{number}"', row)


def _row_number(row: str) -> int | None:
    match = re.search(r'<row\b[^>]*?\br="(\d+)"', row)
    return int(match.group(1)) if match else None


def _cells(row: str) -> dict[int, re.Match]:
    """Column index -> the cell's match: by its reference when it has one, else by position."""
    cells = {}
    for position, match in enumerate(_CELL.finditer(row)):
        ref = _REF.search(match.group(0)[: match.group(0).find(">")])
        cells[_column(ref.group(1)) if ref else position] = match
    return cells


def _splice(row: str, cells: dict[int, re.Match], new: dict[int, str]) -> str:
    """``row`` with the cells of ``new`` replaced (or inserted in column order). Replacing by
    position, not by text: a phase row often repeats a cell's text (``<c><v>0</v></c>``)."""
    pieces, at = [], 0
    end_of_cells = max((m.end() for m in cells.values()), default=row.find(">") + 1)
    for column in sorted(set(cells) | set(new)):
        if column in cells:
            match = cells[column]
            pieces += [row[at : match.start()], new.get(column, match.group(0))]
            at = match.end()
        else:
            following = [cells[c].start() for c in cells if c > column]
            where = min(following) if following else end_of_cells
            pieces += [row[at:where], new[column]]
            at = where
    return "".join(pieces) + row[at:]


def _number_cell(old: str, value: str, style: str | None = None) -> str:
    """A number cell in place of ``old``: its reference kept, its type dropped (a number has
    none), its style kept unless ``style`` is given (a date's)."""
    ref = _REF.search(old[: old.find(">")])
    style = style or _attribute(old, "s")
    attributes = (f' r="{ref.group(1)}{ref.group(2)}"' if ref else "") + (f' s="{style}"' if style else "")
    return f"<c{attributes}><v>{value}</v></c>"


def _number(match: re.Match | None) -> float | None:
    if match is None or _attribute(match.group(0), "t") not in (None, "n"):
        return None  # absent, or text (a number cell has no type, or "n")
    value = _VALUE.search(match.group(0))
    return float(value.group(1)) if value else None


def _is_open(match: re.Match | None, null: int | None) -> bool:
    """An empty end, or the export's text NULL (shared, inline or a formula's string)."""
    cell = match.group(0) if match else ""
    kind = _attribute(cell, "t") if cell else None
    if not cell or (_VALUE.search(cell) is None and "<is>" not in cell):
        return True
    if kind == "s":
        return null is not None and _VALUE.search(cell).group(1) == str(null)
    return kind in ("inlineStr", "str") and ">NULL<" in cell


def _text(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _attribute(cell: str, name: str) -> str | None:
    match = re.search(rf'\b{name}="([^"]*)"', cell[: cell.find(">")])
    return match.group(1) if match else None


def _column(letters: str) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - 64
    return index - 1


def _letters(column: int) -> str:
    letters = ""
    column += 1
    while column:
        column, rest = divmod(column - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _shared_string_index(path: Path, text: str) -> int | None:
    with zipfile.ZipFile(path) as zin:
        if SHARED_STRINGS not in zin.namelist():
            return None
        xml = zin.read(SHARED_STRINGS).decode("utf-8")
    for index, item in enumerate(re.findall(r"<si>(.*?)</si>", xml, re.S)):
        if re.sub(r"<[^>]+>", "", item) == text:
            return index
    return None


def _shift_count(xml: str, delta: int) -> str:
    """The shared-string table's count (references to it, all sheets) after ``delta`` more."""
    return re.sub(r'(<sst\b[^>]*?\bcount=")(\d+)"', lambda m: f'{m.group(1)}{int(m.group(2)) + delta}"', xml, count=1)


def _rewrite_part(source: Path, target: Path, sheet_name: str, edit, head=None, shared=None) -> None:
    """Copy the workbook, passing the sheet's rows (split on ``</row>``) through ``edit``, its
    text before the first row through ``head(text, last_row)`` and the shared strings through
    ``shared``. The sheet is edited first, so ``shared`` may use what ``edit`` counted."""
    part = inspect_workbook(source).sheet_parts[sheet_name]
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        before, _, rest = zin.read(part).decode("utf-8").partition("<row ")
        rows = ("<row " + rest).split("</row>")
        edit(rows)
        if head is not None:
            before = head(before, _row_number(rows[-2]) or len(rows) - 1)
        for info in zin.infolist():
            if info.filename == part:
                with zout.open(info, "w", force_zip64=True) as stream:
                    stream.write((before + "</row>".join(rows)).encode("utf-8"))
            elif info.filename == SHARED_STRINGS and shared is not None:
                zout.writestr(info, shared(zin.read(info.filename).decode("utf-8")).encode("utf-8"))
            else:
                zout.writestr(info, zin.read(info.filename))


def _pick_rows(rows: list[str], share: float, rng: random.Random, days: int | None) -> list[int]:
    data = range(1, len(rows) - 1)  # row 0 is the header; the last piece is the sheet's tail
    count = max(1, int(len(data) * share))
    if days is None:
        return rng.sample(list(data), count)
    # group rows by their start-day serial (3rd cell), then take rows from `days` of the days
    by_day: dict[str, list[int]] = {}
    for index in data:
        cells = _CELL.findall(rows[index])
        match = re.search(r"<v>(\d+)", cells[2]) if len(cells) > 2 else None
        if match:
            by_day.setdefault(match.group(1), []).append(index)
    chosen = rng.sample(sorted(by_day), min(days, len(by_day)))
    pool = [i for d in chosen for i in by_day[d]]
    return rng.sample(pool, min(count, len(pool)))


def phase_differences(source: Path, target: Path) -> dict[str, int]:
    """Read both phase sheets with fastexcel and count what differs: rows whose weight or end
    changed (an end that appeared: a closed phase), and rows beyond the source's (appended)."""
    import warnings

    import fastexcel
    import pyarrow.compute as pc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old, new = (fastexcel.read_excel(str(p)).load_sheet(PHASES).to_arrow() for p in (source, target))
    common = new.slice(0, old.num_rows)  # the edit appends: row i of both is the same phase

    def differs(column: str):
        a, b = old.column(column), common.column(column)
        return pc.fill_null(pc.not_equal(a, b), False), pc.and_(pc.is_null(a), pc.is_valid(b))

    weight, _ = differs("FaseOf_Peso")
    end, closed = differs("FaseOf_Fim")
    any_column = weight
    for column in old.column_names:
        changed, appeared = differs(column)
        any_column = pc.or_(any_column, pc.or_(changed, appeared))
    appended = new.slice(old.num_rows).column("FaseOf_Id")
    return {
        "weight": pc.sum(weight).as_py() or 0,
        "moved": pc.sum(end).as_py() or 0,
        "closed": pc.sum(closed).as_py() or 0,
        "rows changed": pc.sum(any_column).as_py() or 0,
        "appended": len(appended),
        "appended ids new": len(set(appended.to_pylist()) - set(old.column("FaseOf_Id").to_pylist())),
    }


def copy(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    return target
