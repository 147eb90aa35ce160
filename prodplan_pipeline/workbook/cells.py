"""What the fast reader cannot tell: a cell's own kind and its text as stored in the sheet XML.

The calamine reader turns a boolean cell into 1.0 in a number column, a 400-digit number into
``inf`` and a serial date past year 9999 into a timestamp no program can hold. These are rare, so
the sheet XML is consulted only to find them: one streaming scan for boolean cells (a few tenths
of a second on the 519k-row sheet, nothing parsed unless one is there), and, when a cell needs
its raw text, one regular-expression pass over the sheet.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

BLOCK = 1 << 22
BOOLEAN_MARK = b't="b"'
_ROW = re.compile(rb"<(?:\w+:)?row\b([^>]*?)(?:/>|>(.*?)</(?:\w+:)?row>)", re.S)
_CELL = re.compile(rb"<(?:\w+:)?c\b([^>]*?)(?:/>|>(.*?)</(?:\w+:)?c>)", re.S)
_REF = re.compile(rb'\br="([A-Z]+)?(\d+)?"')
_TYPE = re.compile(rb'\bt="(\w+)"')
_VALUE = re.compile(rb"<(?:\w+:)?v>(.*?)</(?:\w+:)?v>", re.S)


def column_index(letters: bytes | str) -> int:
    """0-based column of an Excel column name (A -> 0, AA -> 26)."""
    index = 0
    for char in letters.decode() if isinstance(letters, bytes) else letters:
        index = index * 26 + ord(char) - 64
    return index - 1


def boolean_cells(path: Path, part: str, has_booleans: bool | None = None) -> dict[tuple[int, int], str]:
    """(Excel row, 0-based column) -> "TRUE" / "FALSE" for every boolean cell of the sheet
    (``has_booleans``: what :func:`verified_scan` found, when it ran)."""
    if not (_contains(path, part, BOOLEAN_MARK) if has_booleans is None else has_booleans):
        return {}
    return {
        (row, col): "TRUE" if value == b"1" else "FALSE"
        for row, col, kind, value in _cells(_read(path, part), BOOLEAN_MARK)
        if kind == b"b"
    }


def stored_texts(path: Path, part: str, cells: set[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The stored number (``<v>`` of a numeric cell) of the given (Excel row, 0-based column)
    cells; text cells are left out (the reader's text is theirs already)."""
    if not cells:
        return {}
    rows = {row for row, _ in cells}
    return {
        (row, col): value.decode(errors="replace")
        for row, col, kind, value in _cells(_read(path, part), None, rows)
        if (row, col) in cells and kind == b"n" and value is not None
    }


def _cells(xml: bytes, row_mark: bytes | None, rows: set[int] | None = None):
    """(Excel row, 0-based column, cell type, stored value) of the cells of the rows that contain
    ``row_mark`` (or whose number is in ``rows``). Positions follow the spec: a cell or row
    without an ``r`` attribute is the one after the previous."""
    row_number = 0
    for row in _ROW.finditer(xml):
        ref = _REF.search(row.group(1))
        row_number = int(ref.group(2)) if ref and ref.group(2) else row_number + 1
        body = row.group(2) or b""
        if (row_mark is not None and row_mark not in body) or (rows is not None and row_number not in rows):
            continue
        column = -1
        for cell in _CELL.finditer(body):
            ref = _REF.search(cell.group(1))
            column = column_index(ref.group(1)) if ref and ref.group(1) else column + 1
            kind = _TYPE.search(cell.group(1))
            value = _VALUE.search(cell.group(2) or b"")
            yield row_number, column, kind.group(1) if kind else b"n", value.group(1) if value else None


def verified_scan(path: Path, part: str) -> bool:
    """Inflate the whole sheet once, bounded by the size its zip entry declares and checked
    against its CRC (so a sheet cannot inflate past what was declared and checked before
    reading); True when it holds a boolean cell."""
    return _contains(path, part, BOOLEAN_MARK, to_the_end=True)


def _contains(path: Path, part: str, needle: bytes, to_the_end: bool = False) -> bool:
    tail, found = b"", False
    with zipfile.ZipFile(path) as archive, archive.open(part) as stream:
        while block := stream.read(BLOCK):
            found = found or needle in tail + block[: len(needle)] or needle in block
            if found and not to_the_end:
                return True
            tail = block[-len(needle) :]
    return found


def _read(path: Path, part: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(part)
