"""Edit a generated workbook the way a re-export changes it: ``edited(source, target, edit)``.

``edit`` receives a book with the part of openpyxl's interface the tests use (``book[name]``,
``ws[1]``, ``ws["B2"]``, ``ws.cell(row, column)``, ``ws.iter_rows(min_row=…)``, ``ws.max_row``,
``ws.delete_rows(…)``, ``cell.value``). Why not openpyxl itself: it parses and rewrites all nine
sheets, ~4.3 s of CPU for a 22,000-row sample (~50 s per suite run, on the 2-core machine that
the suite keeps busy), while an edit touches one or two. Here only the sheets an edit opens are
parsed; every other part of the file is copied byte for byte, and so is every cell of an opened
sheet that the edit did not set.

It reads what ``workbook.xlsx_writer`` writes (shared strings, the datetime style, no cell
references), the only workbooks the tests edit; a cell reference or another cell type is
refused rather than guessed. ``split_sheet`` and ``join_sheet`` are the row-level editing that
test_ingest_bad_input uses to write defects cell by cell.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.sax.saxutils import unescape

from prodplan_pipeline.workbook.inspect import inspect_workbook
from prodplan_pipeline.workbook.xlsx_writer import DATETIME_STYLE, escape_xml

SHARED_STRINGS = "xl/sharedStrings.xml"
EXCEL_EPOCH = dt.datetime(1899, 12, 30)
ROW = re.compile(r'<row r="(\d+)"[^>]*?(?:/>|>(.*?)</row>)', re.S)
CELL = re.compile(r"<c\b[^>]*?(?:/>|>.*?</c>)", re.S)
VALUE = re.compile(r"<v>(.*?)</v>", re.S)
_ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')
_STRING = re.compile(r"<si><t[^>]*>(.*?)</t></si>", re.S)
_REFERENCE = re.compile(r"([A-Z]+)(\d+)")

Rows = dict[int, list[str]]  # Excel row number -> the row's <c> elements, in column order


def split_sheet(xml: str) -> tuple[str, Rows, str]:
    """A sheet part's XML: what precedes its rows, its rows, what follows them."""
    start = xml.index("<sheetData>") + len("<sheetData>")
    end = xml.index("</sheetData>")
    rows = {int(m.group(1)): CELL.findall(m.group(2) or "") for m in ROW.finditer(xml, start, end)}
    return xml[:start], rows, xml[end:]


def join_sheet(head: str, rows: Rows, tail: str) -> str:
    body = "".join(f'<row r="{r}">{"".join(cells)}</row>' for r, cells in sorted(rows.items()))
    return head + body + tail


class Cell:
    """One cell: its value decoded on first read, its XML kept until the value is set."""

    __slots__ = ("_xml", "_value", "_decoded", "_strings")

    def __init__(self, xml: str | None, strings: list[str]):
        self._xml, self._strings = xml, strings
        self._value, self._decoded = None, xml is None

    @property
    def value(self):
        if not self._decoded:
            self._value, self._decoded = _decode(self._xml, self._strings), True
        return self._value

    @value.setter
    def value(self, value) -> None:
        self._value, self._decoded, self._xml = value, True, None

    def xml(self, strings: StringTable) -> str:
        return self._xml if self._xml is not None else _encode(self._value, strings)


class Sheet:
    def __init__(self, head: str, rows: list[list[Cell]], tail: str, strings: list[str]):
        self._head, self._rows, self._tail, self._strings = head, rows, tail, strings

    @property
    def max_row(self) -> int:
        return len(self._rows)

    def __getitem__(self, key: int | str):
        if isinstance(key, int):
            return tuple(self._rows[key - 1])
        letters, row = _REFERENCE.fullmatch(key).groups()
        column = 0
        for letter in letters:
            column = column * 26 + ord(letter) - ord("A") + 1
        return self.cell(int(row), column)

    def cell(self, row: int, column: int) -> Cell:
        cells = self._rows[row - 1]
        while len(cells) < column:
            cells.append(Cell(None, self._strings))
        return cells[column - 1]

    def iter_rows(self, min_row: int = 1) -> Iterator[tuple[Cell, ...]]:
        for cells in self._rows[min_row - 1 :]:
            yield tuple(cells)

    def delete_rows(self, idx: int, amount: int = 1) -> None:
        del self._rows[idx - 1 : idx - 1 + amount]

    def xml(self, strings: StringTable) -> str:
        rows = {n: [c.xml(strings) for c in cells] for n, cells in enumerate(self._rows, start=1)}
        return join_sheet(self._head, rows, self._tail)


class StringTable:
    """The workbook's shared strings; a new text is appended, so existing indexes stay valid."""

    def __init__(self, xml: str):
        self.xml = xml
        self.texts = [unescape(t, {"&quot;": '"'}) for t in _STRING.findall(xml)]
        if len(self.texts) != xml.count("<si>"):
            raise ValueError("a shared string with formatting: not a workbook of xlsx_writer's")
        self._index = {text: i for i, text in reversed(list(enumerate(self.texts)))}
        self.added: list[str] = []

    def index(self, text: str) -> int:
        if text not in self._index:
            self._index[text] = len(self.texts)
            self.texts.append(text)
            self.added.append(text)
        return self._index[text]

    def rewritten(self) -> str:
        new = "".join(f'<si><t xml:space="preserve">{escape_xml(t)}</t></si>' for t in self.added)
        xml = re.sub(r'uniqueCount="\d+"', f'uniqueCount="{len(self.texts)}"', self.xml, count=1)
        return xml.replace("</sst>", new + "</sst>")


class Book:
    def __init__(self, archive: zipfile.ZipFile, parts: dict[str, str]):
        self._archive, self._parts = archive, parts
        if SHARED_STRINGS not in archive.namelist():
            raise ValueError(f"no {SHARED_STRINGS}: not a workbook of xlsx_writer's")
        self.strings = StringTable(archive.read(SHARED_STRINGS).decode())
        self.opened: dict[str, Sheet] = {}  # part -> the sheet an edit opened

    def __getitem__(self, name: str) -> Sheet:
        part = self._parts[name]
        if part not in self.opened:
            self.opened[part] = _parse(self._archive.read(part).decode(), self.strings.texts)
        return self.opened[part]


def edited(source: Path, target: Path, edit: Callable[[Book], None]) -> Path:
    """Write ``source`` with ``edit`` applied to ``target``."""
    with zipfile.ZipFile(source) as archive:
        book = Book(archive, inspect_workbook(source).sheet_parts)
        edit(book)
        changed = {part: sheet.xml(book.strings).encode() for part, sheet in book.opened.items()}
        if book.strings.added:
            changed[SHARED_STRINGS] = book.strings.rewritten().encode()
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
            for info in archive.infolist():
                out.writestr(
                    info, changed.get(info.filename) or archive.read(info.filename), compress_type=zipfile.ZIP_DEFLATED
                )
    return target


def header_index(worksheet, header: str) -> int:
    """The 1-based column of ``header`` in the first row (here or in an openpyxl sheet)."""
    return [c.value for c in worksheet[1]].index(header) + 1


def _parse(xml: str, strings: list[str]) -> Sheet:
    head, rows, tail = split_sheet(xml)
    if list(rows) != list(range(1, len(rows) + 1)):
        raise ValueError("rows out of sequence: not a workbook of xlsx_writer's")
    if any(_opening_tag(cell).find(' r="') >= 0 for cells in rows.values() for cell in cells):
        raise ValueError("a cell with a reference: not a workbook of xlsx_writer's")
    return Sheet(head, [[Cell(cell, strings) for cell in cells] for cells in rows.values()], tail, strings)


def _opening_tag(cell: str) -> str:
    return cell[: cell.index(">") + 1]


def _decode(xml: str, strings: list[str]):
    attributes = dict(_ATTRIBUTE.findall(_opening_tag(xml)))
    found = VALUE.search(xml)
    if found is None:
        return None
    text = found.group(1)
    kind = attributes.get("t", "n")
    if kind == "s":
        return strings[int(text)]
    if kind == "b":
        return text == "1"
    if kind != "n":
        raise ValueError(f"cell type {kind!r}: not a workbook of xlsx_writer's")
    if attributes.get("s") == str(DATETIME_STYLE):
        moment = EXCEL_EPOCH + dt.timedelta(days=float(text))
        return moment.replace(microsecond=0) + dt.timedelta(seconds=round(moment.microsecond / 1e6))
    number = float(text)
    return int(number) if number.is_integer() and not any(c in text for c in ".eE") else number


def _encode(value, strings: StringTable) -> str:
    if value is None:
        return "<c/>"
    if isinstance(value, bool):
        return f'<c t="b"><v>{int(value)}</v></c>'
    if isinstance(value, str):
        return f'<c t="s"><v>{strings.index(value)}</v></c>'
    if isinstance(value, dt.datetime):
        serial = (value - EXCEL_EPOCH) / dt.timedelta(days=1)
        return f'<c s="{DATETIME_STYLE}"><v>{serial!r}</v></c>'
    if isinstance(value, (int, float)):
        return f"<c><v>{value!r}</v></c>"
    raise TypeError(f"cannot write {value!r} into a cell")
