"""Read what you hashed: every ingestion reads a private copy of the workbook's bytes.

The ERP (or a user) may replace the export while it is being ingested: renamed over, or written
again. Hashing one file and reading sheets from whatever the path holds a few seconds later can
mix two exports under one hash. So the workbook is copied once, hashed while it is copied, into
``$PRODPLAN_HOME/exports/<sha256>.xlsx``; everything after that reads the copy. An open file
keeps reading the bytes it opened even when another file is renamed over its path.

The copies are also an audit trail of the exports ingested; only the newest ``keep`` are kept.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

DEFAULT_KEEP = 5
BLOCK = 1 << 20


def private_copy(path: Path, store: Path, keep: int = DEFAULT_KEEP) -> tuple[Path, str]:
    """Copy ``path`` into ``store`` under its content's SHA-256: (the copy, the hash)."""
    store.mkdir(parents=True, exist_ok=True)
    incoming = store / f".incoming-{uuid.uuid4().hex}.xlsx"
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as source, open(incoming, "wb") as target:
            while block := source.read(BLOCK):
                digest.update(block)
                target.write(block)
        copy = store / f"{digest.hexdigest()}.xlsx"
        os.replace(incoming, copy)  # atomic: a reader never sees half a copy
    finally:
        incoming.unlink(missing_ok=True)
    os.utime(copy)  # the retention below keeps the most recently ingested
    _prune(store, keep, copy)
    return copy, digest.hexdigest()


def copy_for(store: Path, sha256: str) -> Path:
    """The copy of the export with this content (it must exist: the run made it)."""
    return store / f"{sha256}.xlsx"


def _prune(store: Path, keep: int, current: Path) -> None:
    copies = sorted(store.glob("*.xlsx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [c for c in copies if c != current][max(0, keep - 1) :]:
        old.unlink(missing_ok=True)
