"""Workbooks for benchmarks: generated once per (scale, seed) and reused, and edited copies.

Editing a 1.1 M-row workbook with openpyxl takes minutes, so :func:`change_phase_rows` rewrites
the phase sheet's XML as a stream instead, changing one numeric cell in a share of the rows."""

from __future__ import annotations

import random
import re
import shutil
import zipfile
from pathlib import Path

from prodplan_pipeline.contract import sheet
from prodplan_pipeline.workbook.inspect import inspect_workbook
from prodplan_pipeline.workbook.sample import write_sample

OUT = Path(__file__).resolve().parent / "out"
_CELL = re.compile(r"<c\b[^>]*?(?:/>|>.*?</c>)", re.S)


def sample_workbook(scale: float, seed: int = 7, progress=None) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"sample_s{scale:g}_seed{seed}.xlsx"
    if not path.exists():
        write_sample(path, scale=scale, seed=seed, progress=progress)
    return path


def change_phase_rows(source: Path, target: Path, share: float, header: str = "FaseOf_Peso",
                      seed: int = 1, days: int | None = None) -> int:
    """Copy ``source`` with ``share`` of the phase rows given a new ``header`` value; with
    ``days``, the changed rows are taken from that many distinct days only. Returns rows changed."""
    contract = sheet("FasesOrdemFabrico")
    column = contract.headers.index(header)
    part = inspect_workbook(source).sheet_parts[contract.name]
    rng = random.Random(seed)
    changed = 0
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for info in zin.infolist():
            if info.filename != part:
                zout.writestr(info, zin.read(info.filename))
                continue
            xml = zin.read(part).decode("utf-8")
            head, _, rest = xml.partition("<row ")
            rows = ("<row " + rest).split("</row>")
            picked = _pick_rows(rows, share, rng, days)
            for index in picked:
                cells = _CELL.findall(rows[index])
                old = cells[column]
                new = re.sub(r"<v>[^<]*</v>", f"<v>{rng.randint(5, 40)}.5</v>", old) if "<v>" in old else old
                rows[index] = rows[index].replace(old, new, 1)
                changed += old != new
            with zout.open(info, "w", force_zip64=True) as stream:
                stream.write((head + "</row>".join(rows)).encode("utf-8"))
    return changed


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


def copy(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    return target
