"""Open a workbook file safely: what it is, which sheets it has, and a hash per sheet.

Everything here reads the zip directory only (plus one streaming SHA-256 of the whole file), so
it takes milliseconds even for the full 1.1 M-row export: that is what lets an unchanged sheet
be recognised without parsing a single cell.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from prodplan_pipeline.settings import Settings

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
# An encrypted (password-protected) .xlsx is an OLE2 file holding this stream (UTF-16 name).
ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
MAIN_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
PKG_REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
# Parts whose content changes what a sheet's cells mean (text values, date formats).
SHARED_PARTS = ("xl/sharedStrings.xml", "xl/styles.xml")


class WorkbookError(ValueError):
    """The workbook cannot be ingested as it is; the message says what to fix, in one paragraph."""


@dataclass(frozen=True)
class WorkbookInfo:
    path: Path
    size: int
    sha256: str
    sheet_parts: dict[str, str]  # sheet name -> zip part, in workbook order
    sheet_sha256: dict[str, str]
    sheet_sizes: dict[str, int]  # uncompressed XML bytes: how long a sheet takes to parse
    source: Path | None = None  # the user's file when ``path`` is a private copy of it

    @property
    def shown_path(self) -> Path:
        """The path to name in messages: the user's file, not our copy."""
        return self.source or self.path

    @property
    def sheet_names(self) -> list[str]:
        return list(self.sheet_parts)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# The default limit: a deployment's own comes from its settings, passed in by the caller
# (PRODPLAN_MAX_UNCOMPRESSED_MB).
DEFAULT_MAX_UNCOMPRESSED = Settings.max_uncompressed_mb * 2**20


def inspect_workbook(path: str | Path, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED) -> WorkbookInfo:
    """Check that ``path`` is a readable .xlsx workbook of a sane size; hash it and each of its
    sheets. ``max_uncompressed``: bytes of XML the workbook may declare."""
    path = Path(path).expanduser()
    _check_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            _check_inflated_size(path, archive, max_uncompressed)
            parts = _sheet_parts(path, archive)
            hashes = {name: _part_hash(path, archive, part) for name, part in parts.items()}
            sizes = {name: archive.getinfo(part).file_size for name, part in parts.items()}
    except (zipfile.BadZipFile, zlib.error, EOFError, struct.error) as exc:
        raise WorkbookError(
            f"{path} is damaged: it starts like an .xlsx workbook but its zip structure cannot be "
            f"read ({exc}). Re-export it from the ERP or re-save it in Excel."
        ) from None
    return WorkbookInfo(
        path=path.resolve(),
        size=path.stat().st_size,
        sha256=file_sha256(path),
        sheet_parts=parts,
        sheet_sha256=hashes,
        sheet_sizes=sizes,
    )


def _check_inflated_size(path: Path, archive: zipfile.ZipFile, limit: int) -> None:
    """Refuse, before reading a cell, a workbook that declares more uncompressed bytes than the
    limit: a few megabytes can inflate to gigabytes, and parsing them takes that much memory.
    (A part that inflates past what it declares fails its CRC check when it is read.)"""
    declared = sum(info.file_size for info in archive.infolist())
    if declared > limit:
        biggest = max(archive.infolist(), key=lambda info: info.file_size)
        raise WorkbookError(
            f"{path} inflates to {declared / 2**20:,.0f} MiB of XML ({biggest.filename}: "
            f"{biggest.file_size / 2**20:,.0f} MiB), more than the {limit / 2**20:,.0f} MiB allowed "
            "(the full ERP export is about 180 MiB); nothing was read. If the export really is that "
            "large, raise PRODPLAN_MAX_UNCOMPRESSED_MB (reading takes about four times as much memory)."
        )


WORKBOOK_ADVICE = "give the path of the Folha_IA .xlsx export"
NAME_MAX, PATH_MAX = 255, 4096  # bytes: Linux's limits per name and per path (ENAMETOOLONG)


def _check_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as error:  # missing, a link loop or dangling link, through a file, too long ...
        raise WorkbookError(f"{describe_path_error(path, error)}; {WORKBOOK_ADVICE}.") from None
    if stat.S_ISDIR(mode):
        raise WorkbookError(f"{path} is a folder, not a workbook; give the path of the .xlsx file.")
    if not stat.S_ISREG(mode):  # reading a pipe would wait forever for a writer
        raise WorkbookError(f"{path} is not a regular file (a pipe, socket or device); {WORKBOOK_ADVICE}.")
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise WorkbookError(f"{describe_path_error(path, error)}; {WORKBOOK_ADVICE}.") from None
    with handle:
        head = handle.read(8)
        if head.startswith(OLE2_MAGIC):
            encrypted = _contains(handle, ENCRYPTED_STREAM)
            raise WorkbookError(
                f"{path} is password-protected; remove the password in Excel (File > Info > "
                "Protect Workbook) and save it as .xlsx."
                if encrypted
                else f"{path} is an old-format Excel .xls file; open it in Excel and save it as "
                ".xlsx (Excel Workbook), then ingest that file."
            )
    if not head:
        raise WorkbookError(
            f"{path} is an empty file (0 bytes), not a workbook; export the ERP "
            "data again as .xlsx (an interrupted copy leaves such a file)."
        )
    if not head.startswith(ZIP_MAGIC):
        raise WorkbookError(
            f"{path} is not an Excel .xlsx workbook (an .xlsx file is a zip archive, and this one "
            "is not); export the ERP data as .xlsx."
        )


def describe_path_error(path: Path, error: OSError, action: str = "read") -> str:
    """``path`` and what is wrong with it, in words, from the OSError that using it raised: the
    first half of a one-line message (the caller says what to do). The OS names one errno for
    the whole path, so the path is walked to name the part that breaks it."""
    return _broken_part(path, action) or _errno_problem(path, error, action)


def check_output_path(path: Path, option: str = "--out") -> None:
    """Raise a WorkbookError unless a workbook can be written at ``path``: checked before a
    sample spends minutes generating rows that could not be saved."""
    problem = _broken_part(path, "written", new_file=True)
    if problem is None and os.path.isdir(path):  # unlike Path.is_dir, never raises
        problem = f"{path} is a folder, not a file"
    if problem is None:
        problem = _probe_folder(path)
    if problem is not None:
        raise WorkbookError(f"cannot write the workbook: {problem}; choose another {option}.")


def _probe_folder(path: Path) -> str | None:
    """Create (and remove) the temporary file write_sample writes first, named as it names it:
    only the OS knows whether the folder is writable, read-only, or the name too long."""
    probe = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        probe.open("wb").close()
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG and len(os.fsencode(path.name)) <= NAME_MAX:
            return (
                f"{path} has too long a name: the sample is first written as {probe.name} "
                f"({len(os.fsencode(probe.name))} bytes; at most {NAME_MAX} are allowed)"
            )
        return _errno_problem(path, error, "written")
    probe.unlink()
    return None


def _broken_part(path: Path, action: str, new_file: bool = False) -> str | None:
    """The part of ``path`` that breaks it (a link loop, a dangling link, a file used as a folder,
    a missing folder, a folder that refuses this user), or None. ``new_file``: the last part
    may be missing (it is about to be written), but not be a broken link."""
    parts = path.parts
    for depth in range(1, len(parts) + 1):
        prefix = Path(*parts[:depth])
        try:
            mode = prefix.stat().st_mode
        except OSError as error:
            if new_file and prefix == path and error.errno == errno.ENOENT and not path.is_symlink():
                return None
            return _part_problem(path, prefix, error, action)
        if prefix != path and not stat.S_ISDIR(mode):
            return f"{path} cannot exist: {prefix} is a file, not a folder"
    return None


def _part_problem(path: Path, prefix: Path, error: OSError, action: str) -> str | None:
    """What ``prefix``, the first part of ``path`` that cannot be looked at, does to it; None
    when the path itself is what fails in an ordinary way (the caller's errno says it best)."""
    which = "is" if prefix == path else f"goes through {prefix}, which is"
    if error.errno == errno.ENAMETOOLONG:  # before is_symlink, which would raise it again
        return _errno_problem(path, error, action)
    if error.errno == errno.ELOOP:
        return f"{path} {which} a symbolic link loop (it points back to itself, directly or through other links)"
    if error.errno == errno.ENOENT and prefix.is_symlink():
        return f"{path} {which} a symbolic link to {os.path.realpath(prefix)}, which does not exist"
    if error.errno in (errno.EACCES, errno.EPERM):  # stat needs only its folders' permission
        return (
            f"{path} cannot be {action}: permission denied on the folder {prefix.parent} "
            "(this user may not look inside it)"
        )
    if error.errno == errno.ENOENT and prefix != path:
        return f"{path} does not exist: there is no folder {prefix}"
    return None


def _errno_problem(path: Path, error: OSError, action: str) -> str:
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"{path} cannot be {action}: permission denied (the file or its folder does not let this user in)"
    if error.errno == errno.ENAMETOOLONG:
        longest = max(len(os.fsencode(part)) for part in path.parts)
        limit = (
            f"its longest name {longest}; file systems allow at most {NAME_MAX} bytes per name"
            if longest > NAME_MAX
            else f"at most {PATH_MAX} are allowed"
        )
        return f"{path} is too long a path ({len(os.fsencode(str(path)))} bytes, {limit})"
    if error.errno == errno.ENOENT:
        return f"{path} does not exist"
    return f"{path} cannot be {action}: {error.strerror or error}"


def _contains(handle, needle: bytes, chunk: int = 1 << 20) -> bool:
    """Whether the whole file holds ``needle``: an OLE2 file's directory (its stream names) can
    sit anywhere, e.g. after a big encrypted stream, not only in the first MiB."""
    handle.seek(0)
    tail = b""
    while block := handle.read(chunk):
        if needle in tail + block:
            return True
        tail = block[-len(needle) :]
    return False


def _sheet_parts(path: Path, archive: zipfile.ZipFile) -> dict[str, str]:
    """Sheet name -> worksheet part, read from workbook.xml and its relationships."""
    names = set(archive.namelist())
    if "xl/workbook.xml" not in names:
        raise WorkbookError(
            f"{path} is a zip archive but not an Excel workbook (no xl/workbook.xml); "
            "export the ERP data as .xlsx (Excel Workbook)."
        )
    workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    targets = {}
    if "xl/_rels/workbook.xml.rels" in names:
        rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
        for rel in rels.iter(f"{PKG_REL_NS}Relationship"):
            target = rel.get("Target", "")
            target = target.lstrip("/") if target.startswith("/") else posixpath.normpath(f"xl/{target}")
            targets[rel.get("Id")] = target
    parts = {}
    for sheet in workbook.iter(f"{MAIN_NS}sheet"):
        part = targets.get(sheet.get(f"{REL_NS}id"))
        if part in names:
            parts[sheet.get("name")] = part
    if not parts:
        raise WorkbookError(f"{path} contains no worksheets; it should have the nine Folha_IA sheets.")
    return parts


def _part_hash(path: Path, archive: zipfile.ZipFile, part: str) -> str:
    """A sheet's content fingerprint: SHA-256 over the CRC-32 and size that the zip directory
    records for the *uncompressed* XML of the sheet, its shared strings and its styles. Any change
    of content changes it; re-compressing or re-zipping the same content does not; and it costs
    no decompression (an unchanged 1.1 M-row workbook is recognised in milliseconds)."""
    digest = hashlib.sha256()
    for member in (part, *SHARED_PARTS):
        try:
            info = archive.getinfo(member)
        except KeyError:
            continue
        digest.update(member.encode() + b"\0" + struct.pack("<IQ", info.CRC, info.file_size))
    return digest.hexdigest()


_ROW = re.compile(rb"<(?:\w+:)?row\b([^>]*?)(?:/>|>(.*?)</(?:\w+:)?row>)", re.S)
_ROW_NUMBER = re.compile(rb'\br="(\d+)"')
_HAS_VALUE = re.compile(rb"<(?:\w+:)?(?:v|is)\b")  # a stored value, or an inline string
HEADER_SEARCH_BYTES = 1 << 24  # styled empty rows above a header are few


def first_row_number(path: Path, part: str) -> int:
    """The Excel row number of a sheet's first row holding a value (the header, as the reader
    takes it): styled empty rows above it do not count. 1 when unknown."""
    buffer, number, read = b"", 0, 0
    with zipfile.ZipFile(path) as archive, archive.open(part) as stream:
        while read < HEADER_SEARCH_BYTES and (chunk := stream.read(1 << 16)):
            buffer, read = buffer + chunk, read + len(chunk)
            end = 0
            for row in _ROW.finditer(buffer):
                ref = _ROW_NUMBER.search(row.group(1))
                number = int(ref.group(1)) if ref else number + 1
                if row.group(2) and _HAS_VALUE.search(row.group(2)):
                    return number
                end = row.end()
            buffer = buffer[end:]
    return 1
