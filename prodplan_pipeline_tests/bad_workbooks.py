"""The bad workbooks of test_ingest_bad_input, each derived from the project's own sample by
rewriting the XML inside the zip (or by writing a file that is no workbook at all), so each
defect is exactly the one intended: the rest of the sheet, its shared strings and its date cells
stay byte for byte as the generator wrote them. FILE_CASES and SHEET_CASES name each builder."""

from __future__ import annotations

import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

from prodplan_pipeline.contract import sheet
from prodplan_pipeline.workbook.inspect import OLE2_MAGIC, inspect_workbook
from prodplan_pipeline_tests.workbook_edit import VALUE, Rows, join_sheet, split_sheet

_SHEET_ENTRY = '<sheet name="{}" '


def sheet_rows(book: Path, name: str) -> Rows:
    part = inspect_workbook(book).sheet_parts[name]
    with zipfile.ZipFile(book) as archive:
        return split_sheet(archive.read(part).decode())[1]


def rewrite(
    source: Path,
    target: Path,
    edits: dict[str, Callable[[Rows], Rows]] | None = None,
    drop_sheets: tuple[str, ...] = (),
) -> Path:
    """Copy ``source`` to ``target``, editing the rows of the named sheets and dropping sheets
    from the workbook's sheet list."""
    parts = inspect_workbook(source).sheet_parts
    by_part = {parts[name]: edit for name, edit in (edits or {}).items()}
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename in by_part:
                head, rows, tail = split_sheet(data.decode())
                data = join_sheet(head, by_part[info.filename](rows), tail).encode()
            elif info.filename == "xl/workbook.xml":
                text = data.decode()
                for name in drop_sheets:
                    entry = re.search(re.escape(_SHEET_ENTRY.format(name)) + r"[^>]*/>", text)
                    assert entry, f"no sheet {name} in {source}"
                    text = text.replace(entry.group(0), "")
                data = text.encode()
            zout.writestr(info, data)
    return target


def text_cell(value: str) -> str:
    return f'<c t="inlineStr"><is><t xml:space="preserve">{escape(value)}</t></is></c>'


def number_cell(value: float) -> str:
    return f"<c><v>{value!r}</v></c>"


def formula_cell(formula: str, cached: float, style: int | None = None) -> str:
    s = f' s="{style}"' if style is not None else ""
    return f"<c{s}><f>{escape(formula)}</f><v>{cached!r}</v></c>"


DATE_STYLE = 1  # the sample's date-time cell format (xl/styles.xml cellXfs index 1)
FORMATTED_EMPTY = f'<c s="{DATE_STYLE}"/>'  # a cell with formatting but no value


def number_of(cell: str) -> float | None:
    """The value of a number cell; None for any other cell (shared string, inline string)."""
    if 't="' in cell.split(">", 1)[0]:
        return None
    match = VALUE.search(cell)
    return float(match.group(1)) if match else None


def column_index(sheet_name: str, header: str) -> int:
    return sheet(sheet_name).headers.index(header)


# --- OLE2 containers (old .xls, encrypted .xlsx) -------------------------------------------------

SECTOR = 512
NO_STREAM, END_OF_CHAIN, FAT_SECTOR = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD


def ole2_container(streams: list[str], payload: int = 4096, directory_last: bool = False) -> bytes:
    """A minimal compound file (the OLE2 container both an old .xls and a password-protected
    .xlsx are stored in): a root storage holding the named streams, the last of which holds
    ``payload`` bytes. ``directory_last`` puts the directory after the stream data, as a writer
    may for a big file: then the stream names are not within the file's first MiB."""
    data_sectors = -(-payload // SECTOR)
    entries = ["Root Entry", *streams]
    dir_sectors = -(-len(entries) // 4)
    fat_count = 1
    while fat_count * (SECTOR // 4) < fat_count + data_sectors + dir_sectors:
        fat_count += 1
    first_data, first_dir = (
        (fat_count, fat_count + data_sectors) if directory_last else (fat_count + dir_sectors, fat_count)
    )
    fat = [FAT_SECTOR] * fat_count + [0] * (data_sectors + dir_sectors)
    for first, count in ((first_data, data_sectors), (first_dir, dir_sectors)):
        for i in range(count):
            fat[first + i] = first + i + 1 if i < count - 1 else END_OF_CHAIN
    fat += [NO_STREAM] * (fat_count * SECTOR // 4 - len(fat))

    header = bytearray(SECTOR)
    header[0:8] = OLE2_MAGIC
    struct.pack_into("<HHHHH", header, 0x18, 0x3E, 3, 0xFFFE, 9, 6)
    struct.pack_into("<9I", header, 0x28, 0, fat_count, first_dir, 0, 4096, END_OF_CHAIN, 0, END_OF_CHAIN, 0)
    struct.pack_into("<109I", header, 0x4C, *range(fat_count), *[NO_STREAM] * (109 - fat_count))

    directory = bytearray(dir_sectors * SECTOR)
    for i, name in enumerate(entries):
        entry = memoryview(directory)[i * 128 : (i + 1) * 128]
        raw = name.encode("utf-16-le")
        entry[0 : len(raw)] = raw
        is_root, is_last = i == 0, i == len(entries) - 1
        struct.pack_into(
            "<HBBIII",
            entry,
            64,
            len(raw) + 2,
            5 if is_root else 2,
            1,
            NO_STREAM,
            NO_STREAM if is_root or is_last else i + 1,
            1 if is_root else NO_STREAM,
        )
        start, size = (first_data, payload) if is_last and payload else (END_OF_CHAIN, 0)
        struct.pack_into("<IQ", entry, 116, start, size)
    for i in range(len(entries), dir_sectors * 4):  # unused entries
        struct.pack_into("<III", directory, i * 128 + 68, NO_STREAM, NO_STREAM, NO_STREAM)

    data = (bytes(range(256)) * (data_sectors * SECTOR // 256 + 1))[: data_sectors * SECTOR]
    fat_bytes = struct.pack(f"<{len(fat)}I", *fat)
    body = fat_bytes + (data + directory if directory_last else directory + data)
    return bytes(header) + body


# --- fixtures ----------------------------------------------------------------------------------


def _missing(tmp: Path, sample: Path) -> Path:
    return tmp / "no_such_export.xlsx"


def _directory(tmp: Path, sample: Path) -> Path:
    (tmp / "folder.xlsx").mkdir()
    return tmp / "folder.xlsx"


def _text_file(tmp: Path, sample: Path) -> Path:
    path = tmp / "notes.xlsx"
    path.write_text("Of_Id;Of_DataCriacao\n1;2024-01-15\n", encoding="utf-8")
    return path


def _truncated(tmp: Path, sample: Path) -> Path:
    path = tmp / "truncated.xlsx"
    data = sample.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # an interrupted download or copy
    return path


def _old_xls(tmp: Path, sample: Path) -> Path:
    path = tmp / "Folha_IA.xlsx"  # the extension says .xlsx, the bytes say BIFF in OLE2
    path.write_bytes(ole2_container(["\x05SummaryInformation", "Workbook"]))
    return path


# A real password-protected workbook needs a tool we do not have (Excel, or msoffcrypto-tool to
# encrypt one), so this is a synthetic OLE2 container holding the streams an encrypted .xlsx
# has, among them the UTF-16LE stream name "EncryptedPackage" that identifies it.
def _password(tmp: Path, sample: Path) -> Path:
    path = tmp / "protected.xlsx"
    path.write_bytes(ole2_container(["EncryptionInfo", "EncryptedPackage"]))
    return path


def _password_big(tmp: Path, sample: Path) -> Path:
    """The real export encrypted is tens of MB of EncryptedPackage stream; a writer may put the
    directory (the stream names) after it, far beyond the file's first MiB."""
    path = tmp / "protected_big.xlsx"
    path.write_bytes(ole2_container(["EncryptionInfo", "EncryptedPackage"], payload=3 << 20, directory_last=True))
    assert "EncryptedPackage".encode("utf-16-le") not in path.read_bytes()[: 1 << 20]
    return path


def _zero_bytes(tmp: Path, sample: Path) -> Path:
    path = tmp / "empty.xlsx"
    path.write_bytes(b"")
    return path


def _zip_not_workbook(tmp: Path, sample: Path) -> Path:
    path = tmp / "archive.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("Folha_IA.csv", "Of_Id;Of_DataCriacao\n")
    return path


FILE_CASES = {
    "missing_path": (_missing, ["does not exist", "give the path"]),
    "directory": (_directory, ["is a folder", "give the path of the .xlsx file"]),
    "text_file_named_xlsx": (_text_file, ["is not an Excel .xlsx workbook", "export the ERP data as .xlsx"]),
    "truncated_zip": (_truncated, ["is damaged", "Re-export it from the ERP"]),
    "old_xls": (_old_xls, ["old-format Excel .xls", "save it as .xlsx"]),
    "password_protected": (_password, ["password-protected", "remove the password"]),
    "password_protected_big": (_password_big, ["password-protected", "remove the password"]),
    "zero_bytes": (_zero_bytes, ["empty file (0 bytes)", "export"]),
    "zip_not_workbook": (_zip_not_workbook, ["not an Excel workbook", "export"]),
}


def _drop_column(name: str, header: str):
    index = column_index(name, header)

    def edit(rows: Rows) -> Rows:
        return {r: cells[:index] + cells[index + 1 :] for r, cells in rows.items()}

    return edit


def _rename_column(name: str, header: str, new: str):
    index = column_index(name, header)

    def edit(rows: Rows) -> Rows:
        rows[1][index] = text_cell(new)
        return rows

    return edit


def _swap_columns(name: str, a: str, b: str):
    i, j = column_index(name, a), column_index(name, b)

    def edit(rows: Rows) -> Rows:
        for cells in rows.values():
            cells[i], cells[j] = cells[j], cells[i]
        return rows

    return edit


def _extra_column(header: str | None):
    def edit(rows: Rows) -> Rows:
        for r, cells in rows.items():
            if r == 1:
                cells.append(text_cell(header) if header else FORMATTED_EMPTY)
            else:
                cells.append(text_cell(f"note {r}"))
        return rows

    return edit


SHEET_CASES = {
    "missing_sheet": (
        "Fases",
        dict(drop_sheets=("Fases",)),
        ["the sheet 'Fases' is missing", "nothing of this sheet was loaded"],
    ),
    "missing_column": (
        "OrdensFabrico",
        dict(edits={"OrdensFabrico": _drop_column("OrdensFabrico", "Of_DataTransporte")}),
        ["sheet 'OrdensFabrico'", "missing column(s) ['Of_DataTransporte']"],
    ),
    "renamed_column": (
        "Modelos",
        dict(edits={"Modelos": _rename_column("Modelos", "Produto_Nome", "Produto_Name")}),
        ["sheet 'Modelos'", "was 'Produto_Nome' renamed to 'Produto_Name'?"],
    ),
    "reordered_columns": (
        "FuncionariosFaseOrdemFabrico",
        dict(
            edits={
                "FuncionariosFaseOrdemFabrico": _swap_columns(
                    "FuncionariosFaseOrdemFabrico", "FuncionarioFaseOf_FaseOfId", "FuncionarioFaseOf_FuncionarioId"
                )
            }
        ),
        ["sheet 'FuncionariosFaseOrdemFabrico'", "in a different order"],
    ),
    "extra_column": (
        "OrdemFabricoErros",
        dict(edits={"OrdemFabricoErros": _extra_column("Erro_Comentario")}),
        ["sheet 'OrdemFabricoErros'", "unexpected column(s) ['Erro_Comentario']"],
    ),
    "values_without_header": (
        "FasesStandardModelos",
        dict(edits={"FasesStandardModelos": _extra_column(None)}),
        ["sheet 'FasesStandardModelos' has values in column 6, which has no header"],
    ),
}
