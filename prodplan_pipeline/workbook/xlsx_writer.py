"""A small streaming ``.xlsx`` writer: sheets are written chunk by chunk straight into the zip.

Why not xlsxwriter: it spends ~53 s on the 519k x 12 phase sheet; formatting the sheet XML
per chunk with list comprehensions and streaming it into a deflate stream takes ~3 s.

Usage::

    with XlsxWriter(path, ["Sheet1"], null_text="NULL") as book:
        with book.sheet("Sheet1", ["When", "Kg", "Name"], [DATETIME, DECIMAL, TEXT]) as sheet:
            sheet.write_columns([when_array, kg_array, names])   # any number of times

What it writes: ``[Content_Types].xml``, ``_rels/.rels``, ``xl/workbook.xml``,
``xl/_rels/workbook.xml.rels``, ``xl/styles.xml`` (cell style 1 = ``yyyy-mm-dd hh:mm:ss``),
one ``xl/worksheets/sheetN.xml`` per sheet and, at close, ``xl/sharedStrings.xml`` (text cells
are shared strings, collected while the sheets stream). Memory is bounded by one chunk.

Cells: ints as ints; decimals with ``repr`` (shortest round trip: 0.35 stays 0.35; integral
values as ``8``); datetimes as Excel serial days (1900 date system) with the datetime style;
text as shared strings, XML-escaped. A missing value (NaN, NaT, None, or flagged in the
column's null mask) is written as the ``null_text`` string, or as no cell when that is None.
Infinite numbers and NaN that cannot be written are refused, never written.

Deterministic: zip entries carry a fixed date (1980-01-01) and fixed attributes, so the same
calls give the same bytes. ZIP64 is used only for a sheet flagged as possibly > 2 GiB: Python
writes ZIP64 local headers that Excel refuses on small parts (and may want to repair on big
ones; openpyxl and calamine read both).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

INT = "int"
DECIMAL = "decimal"
DATETIME = "datetime"
TEXT = "text"
KINDS = (INT, DECIMAL, DATETIME, TEXT)

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
DATETIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
DATETIME_STYLE = 1  # index in cellXfs
EXCEL_EPOCH = np.datetime64("1899-12-30T00:00:00", "us")  # serial 0 of the 1900 date system
FIRST_SAFE_SERIAL = 61.0  # 1900-03-01: before it Excel's phantom 1900-02-29 shifts serials
MAX_SHEET_NAME = 31
_BAD_SHEET_NAME = re.compile(r"[\[\]:*?/\\]")
_BAD_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_OPC_CT = "application/vnd.openxmlformats-package."
_SML_CT = "application/vnd.openxmlformats-officedocument.spreadsheetml."
_SHEET_CT = _SML_CT + "worksheet+xml"


def escape_xml(text: str) -> str:
    """Escape ``&``, ``<``, ``>`` and quotes; refuse characters XML 1.0 cannot carry."""
    bad = _BAD_XML_CHARS.search(text)
    if bad:
        raise ValueError(f"text {text[:40]!r} holds character {bad.group()!r}, which XML cannot carry")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


class XlsxWriter:
    """Streams a workbook whose sheet names are declared up front, in workbook order."""

    def __init__(
        self,
        target: str | Path | io.BufferedIOBase,
        sheet_names: Sequence[str],
        null_text: str | None = None,
        compresslevel: int = 1,
    ):
        names = list(sheet_names)
        _check_sheet_names(names)
        self._names = names
        self._null_text = null_text
        self._level = compresslevel
        self._zip = zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        self._strings: dict[str, int] = {}
        self._string_refs = 0
        self._written = 0  # sheets finished
        self._open_sheet: SheetWriter | None = None
        self._closed = False
        self._write_static_parts()

    # -- public ---------------------------------------------------------------------------

    def sheet(self, name: str, headers: Sequence[str], kinds: Sequence[str], zip64: bool = False) -> SheetWriter:
        """Start the next declared sheet; write its header row.

        ``zip64``: set it when the sheet's XML may exceed 2 GiB (Python's zipfile refuses a
        larger streamed entry without it). Otherwise entries are written without ZIP64
        extensions: Excel rejects ZIP64 local headers on small parts.
        """
        if self._open_sheet is not None:
            raise RuntimeError(f"sheet {self._open_sheet.name!r} is still open")
        if self._written >= len(self._names) or self._names[self._written] != name:
            expected = self._names[self._written] if self._written < len(self._names) else "none"
            raise ValueError(f"sheet {name!r} written out of order; next declared sheet: {expected}")
        if len(headers) != len(kinds) or any(k not in KINDS for k in kinds):
            raise ValueError(f"sheet {name!r}: need one kind of {KINDS} per header, got {list(kinds)}")
        stream = self._open_entry(f"xl/worksheets/sheet{self._written + 1}.xml", zip64=zip64)
        self._open_sheet = SheetWriter(self, name, stream, list(headers), list(kinds))
        return self._open_sheet

    def close(self) -> None:
        if self._closed:
            return
        if self._open_sheet is not None:
            raise RuntimeError(f"sheet {self._open_sheet.name!r} is still open")
        if self._written != len(self._names):
            missing = ", ".join(self._names[self._written :])
            raise RuntimeError(f"declared sheets never written: {missing}")
        self._write_shared_strings()
        self._zip.close()
        self._closed = True

    def abort(self) -> None:
        """Close the zip without the checks (the file is incomplete; the caller discards it)."""
        if not self._closed:
            self._closed = True
            self._zip.close()

    def __enter__(self) -> XlsxWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            if self._open_sheet is not None:
                self._open_sheet._stream.close()
                self._open_sheet = None
            self.abort()

    # -- used by SheetWriter ---------------------------------------------------------------

    def _string_index(self, text: str) -> int:
        i = self._strings.get(text)
        if i is None:
            if not isinstance(text, str):
                raise TypeError(f"text cell value {text!r} is not a str")
            escape_xml(text)  # refuse unwritable text now, not at close
            i = self._strings[text] = len(self._strings)
        return i

    def _string_cells(self, values: list) -> list[str]:
        """Shared-string cells for a list of str (None already removed)."""
        get, index = self._strings.get, self._string_index
        indexes = [get(text) for text in values]
        if None in indexes:
            indexes = [index(text) for text in values]
        self._string_refs += len(indexes)
        return [f'<c t="s"><v>{i}</v></c>' for i in indexes]

    def _null_cells(self, count: int) -> str:
        """The cell for a missing value (counted ``count`` times); empty: no cell."""
        if self._null_text is None:
            return ""
        self._string_refs += count
        return f'<c t="s"><v>{self._string_index(self._null_text)}</v></c>'

    def _sheet_done(self) -> None:
        self._open_sheet = None
        self._written += 1

    # -- parts -----------------------------------------------------------------------------

    def _open_entry(self, name: str, zip64: bool = False):
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.create_system = 0  # not platform dependent
        info.external_attr = 0
        if hasattr(info, "compress_level"):  # Python >= 3.13
            info.compress_level = self._level
        else:
            info._compresslevel = self._level
        return self._zip.open(info, "w", force_zip64=zip64)

    def _write_part(self, name: str, xml: str) -> None:
        with self._open_entry(name) as stream:
            stream.write((_XML_DECL + xml).encode("utf-8"))

    def _write_static_parts(self) -> None:
        n = len(self._names)
        sheets_ct = "".join(
            f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="{_SHEET_CT}"/>' for i in range(1, n + 1)
        )
        self._write_part(
            "[Content_Types].xml",
            (
                '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                f'<Default Extension="rels" ContentType="{_OPC_CT}relationships+xml"/>'
                '<Default Extension="xml" ContentType="application/xml"/>'
                f'<Override PartName="/xl/workbook.xml" ContentType="{_SML_CT}sheet.main+xml"/>'
                f"{sheets_ct}"
                f'<Override PartName="/xl/styles.xml" ContentType="{_SML_CT}styles+xml"/>'
                f'<Override PartName="/xl/sharedStrings.xml" ContentType="{_SML_CT}sharedStrings+xml"/>'
                "</Types>"
            ),
        )
        self._write_part(
            "_rels/.rels",
            (
                f'<Relationships xmlns="{_PKG_REL_NS}">'
                f'<Relationship Id="rId1" Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/>'
                "</Relationships>"
            ),
        )
        sheets = "".join(
            f'<sheet name="{escape_xml(name)}" sheetId="{i}" r:id="rId{i}"/>'
            for i, name in enumerate(self._names, start=1)
        )
        self._write_part(
            "xl/workbook.xml",
            (f'<workbook xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}"><sheets>{sheets}</sheets></workbook>'),
        )
        rels = "".join(
            f'<Relationship Id="rId{i}" Type="{_REL_NS}/worksheet" Target="worksheets/sheet{i}.xml"/>'
            for i in range(1, n + 1)
        )
        self._write_part(
            "xl/_rels/workbook.xml.rels",
            (
                f'<Relationships xmlns="{_PKG_REL_NS}">{rels}'
                f'<Relationship Id="rId{n + 1}" Type="{_REL_NS}/styles" Target="styles.xml"/>'
                f'<Relationship Id="rId{n + 2}" Type="{_REL_NS}/sharedStrings" Target="sharedStrings.xml"/>'
                "</Relationships>"
            ),
        )
        self._write_part("xl/styles.xml", _styles_xml())

    def _write_shared_strings(self) -> None:
        with self._open_entry("xl/sharedStrings.xml") as stream:
            stream.write(
                (
                    _XML_DECL + f'<sst xmlns="{_MAIN_NS}" count="{self._string_refs}" '
                    f'uniqueCount="{len(self._strings)}">'
                ).encode("utf-8")
            )
            items = []
            for text in self._strings:  # insertion order: deterministic
                space = ' xml:space="preserve"' if text != text.strip() or "\n" in text else ""
                items.append(f"<si><t{space}>{escape_xml(text)}</t></si>")
                if len(items) >= 10_000:
                    stream.write("".join(items).encode("utf-8"))
                    items = []
            stream.write(("".join(items) + "</sst>").encode("utf-8"))


class SheetWriter:
    """One sheet being streamed. Rows are appended by column-wise chunks."""

    def __init__(self, book: XlsxWriter, name: str, stream, headers: list[str], kinds: list[str]):
        self.book = book
        self.name = name
        self.kinds = kinds
        self.rows_written = 0  # data rows, header excluded
        self._stream = stream
        self._next_row = 2
        stream.write(
            (
                _XML_DECL + f'<worksheet xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}"><sheetData>'
                f'<row r="1">{"".join(book._string_cells(headers))}</row>'
            ).encode("utf-8")
        )

    def write_columns(self, columns: Sequence[Any], nulls: Sequence[Any] | None = None) -> int:
        """Append rows given column-wise: one array/list per header, all the same length.

        ``nulls`` (optional) holds per column a boolean mask of missing values (or None).
        Returns the number of rows appended.
        """
        if len(columns) != len(self.kinds):
            raise ValueError(f"sheet {self.name!r}: {len(columns)} columns given, {len(self.kinds)} expected")
        nulls = list(nulls) if nulls is not None else [None] * len(columns)
        cells = [
            self._column_cells(col, kind, null) for col, kind, null in zip(columns, self.kinds, nulls, strict=True)
        ]
        n = len(cells[0]) if cells else 0
        if any(len(c) != n for c in cells):
            raise ValueError(f"sheet {self.name!r}: columns of different lengths {[len(c) for c in cells]}")
        if n == 0:
            return 0
        first = self._next_row
        row_open = [f'<row r="{r}">' for r in range(first, first + n)]
        xml = "".join(["".join(x) + "</row>" for x in zip(row_open, *cells, strict=True)])
        self._stream.write(xml.encode("utf-8"))
        self._next_row += n
        self.rows_written += n
        return n

    def close(self) -> None:
        if self._stream is None:
            return
        self._stream.write(b"</sheetData></worksheet>")
        self._stream.close()
        self._stream = None
        self.book._sheet_done()

    def __enter__(self) -> SheetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def _column_cells(self, values: Any, kind: str, null: Any) -> list[str]:
        arr, missing = _normalise(values, kind)
        if null is not None:
            null = np.asarray(null, dtype=bool)
            missing = null if missing is None else (missing | null)
        fmt = _FORMATTERS[kind]
        if missing is None or not missing.any():
            return fmt(self.book, arr)
        keep = np.flatnonzero(~missing)
        out = np.full(len(arr), self.book._null_cells(len(arr) - len(keep)), dtype=object)
        if len(keep):
            out[keep] = np.array(fmt(self.book, arr[keep]), dtype=object)
        return out.tolist()


def _normalise(values: Any, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The values as a numpy array of the kind's dtype, and the mask of missing values."""
    if kind == TEXT:
        arr = np.asarray(values, dtype=object)
        missing = np.fromiter((v is None for v in arr.tolist()), dtype=bool, count=len(arr))
        return arr, (missing if missing.any() else None)
    if kind == DATETIME:
        arr = np.asarray(values)
        if arr.dtype.kind != "M":
            arr = np.array([np.datetime64("NaT") if v is None else v for v in arr.tolist()], dtype="datetime64[us]")
        missing = np.isnat(arr)
        return arr, (missing if missing.any() else None)
    arr = np.asarray(values)
    if arr.dtype == object:
        missing = np.fromiter((v is None for v in arr.tolist()), dtype=bool, count=len(arr))
        arr = np.where(missing, 0, arr).astype(np.float64 if kind == DECIMAL else np.int64)
        return arr, (missing if missing.any() else None)
    if arr.dtype.kind == "f":
        missing = np.isnan(arr)
        if np.isinf(arr).any():
            raise ValueError("infinite number in a numeric column: cannot be written to Excel")
        return arr, (missing if missing.any() else None)
    if arr.dtype.kind in "iub":
        return arr, None
    raise TypeError(f"cannot write values of dtype {arr.dtype} as {kind}")


def _int_cells(book: XlsxWriter, arr: np.ndarray) -> list[str]:
    if arr.dtype.kind == "f":
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError("non-integral value in an int column")
        arr = arr.astype(np.int64)
    return [f"<c><v>{v}</v></c>" for v in arr.astype(np.int64).tolist()]


def _number_texts(arr: np.ndarray) -> list[str]:
    """Shortest round-trip text per float; integral values without ``.0``."""
    arr = arr.astype(np.float64)
    integral = (arr == np.round(arr)) & (np.abs(arr) < 2.0**53)
    if integral.all():
        return [str(v) for v in arr.astype(np.int64).tolist()]
    if not integral.any():
        return [repr(v) for v in arr.tolist()]
    out = np.empty(len(arr), dtype=object)
    out[integral] = np.array([str(v) for v in arr[integral].astype(np.int64).tolist()], dtype=object)
    out[~integral] = np.array([repr(v) for v in arr[~integral].tolist()], dtype=object)
    return out.tolist()


def _decimal_cells(book: XlsxWriter, arr: np.ndarray) -> list[str]:
    if arr.dtype.kind in "iub":
        return _int_cells(book, arr)
    return [f"<c><v>{t}</v></c>" for t in _number_texts(arr)]


def _datetime_cells(book: XlsxWriter, arr: np.ndarray) -> list[str]:
    serial = (arr.astype("datetime64[us]") - EXCEL_EPOCH) / np.timedelta64(1, "D")
    if len(serial) and serial.min() < FIRST_SAFE_SERIAL:
        raise ValueError("datetime before 1900-03-01 cannot be written as an Excel serial date")
    return [f'<c s="{DATETIME_STYLE}"><v>{t}</v></c>' for t in _number_texts(serial)]


def _text_cells(book: XlsxWriter, arr: np.ndarray) -> list[str]:
    return book._string_cells(arr.tolist())


_FORMATTERS = {INT: _int_cells, DECIMAL: _decimal_cells, DATETIME: _datetime_cells, TEXT: _text_cells}


def _check_sheet_names(names: list[str]) -> None:
    if not names:
        raise ValueError("a workbook needs at least one sheet")
    seen = set()
    for name in names:
        if not name or len(name) > MAX_SHEET_NAME or _BAD_SHEET_NAME.search(name):
            raise ValueError(f"invalid sheet name {name!r}: 1-31 characters, none of []:*?/\\")
        if name.lower() in seen:
            raise ValueError(f"duplicate sheet name {name!r}")
        seen.add(name.lower())


def _styles_xml() -> str:
    return (
        f'<styleSheet xmlns="{_MAIN_NS}">'
        f'<numFmts count="1"><numFmt numFmtId="164" formatCode="{DATETIME_FORMAT}"/></numFmts>'
        '<fonts count="1"><font><sz val="11"/><name val="Calibri"/><family val="2"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
        '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>"
    )
