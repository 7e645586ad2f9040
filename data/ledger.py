"""The files a tool wrote into a folder, by content hash (`folder/.written.json`), so it can rewrite its own files
and nothing else.

`Ledger(folder, tool)`: a tool replaces a file only if the ledger says it wrote exactly those bytes; a file the user
made or edited is refused with data.writes.WouldOverwrite, whose message names the file and the way out. Used by the
tools that write into folders (data.download, sweep, rl); a training run writes through data.writes only, so a
record does not ship this module.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import BinaryIO, Callable

from data.writes import WouldOverwrite, atomic_write

LEDGER_NAME = ".written.json"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Ledger:
    """What `tool` wrote into `folder` (names relative to it), so it can safely rewrite its own files.

    A file's entry lists the hashes of the last contents the tool put there, and the new hash is recorded *before*
    the file is replaced: a tool killed in between still owns whichever of the two versions is on disk."""

    KEEP = 8  # hashes remembered per file

    def __init__(self, folder: str | os.PathLike, tool: str):
        self.folder, self.tool = Path(folder), tool
        self.path = self.folder / LEDGER_NAME
        self.files: dict[str, list[str]] = {}
        if self.path.is_file():
            try:
                entries = json.loads(self.path.read_text(encoding="utf-8"))["files"]
                self.files = {k: [v] if isinstance(v, str) else list(v) for k, v in entries.items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self.files = {}  # unreadable ledger: own nothing, so nothing gets replaced

    def _name(self, name: str) -> str:
        p = Path(name)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"ledger names are relative to {self.folder}, got {name!r}")
        return p.as_posix()

    def owns(self, name: str, exact: bool = True) -> bool:
        """True if the file is absent or holds bytes this tool wrote there (`exact=False`: if this tool put a file
        there at all, e.g. a downloaded shard damaged since, which may be fetched again)."""
        target = self.folder / self._name(name)
        if not target.exists():
            return True
        recorded = self.files.get(self._name(name))
        return target.is_file() and bool(recorded) and (not exact or file_sha256(target) in recorded)

    def check(self, *names: str) -> None:
        for name in names:
            if not self.owns(name):
                target = self.folder / self._name(name)
                raise WouldOverwrite(
                    f"{target} exists and was not written by {self.tool} (or was edited since); refusing to replace it: "
                    f"move it away or choose another output folder")

    def write(self, name: str, data: bytes | str | Callable[[BinaryIO], None]) -> Path:
        """Check, record, write atomically. `name` is relative to the folder."""
        self.check(name)
        if callable(data):
            buf = io.BytesIO()
            data(buf)
            data = buf.getvalue()
        blob = data.encode("utf-8") if isinstance(data, str) else data
        self.expect(name, hashlib.sha256(blob).hexdigest())
        return atomic_write(self.folder / self._name(name), blob)

    def expect(self, name: str, sha256: str) -> None:
        """Record that this tool is putting content with this hash at `name` (before it does)."""
        known = [h for h in self.files.get(self._name(name), []) if h != sha256]
        self.files[self._name(name)] = (known + [sha256])[-self.KEEP:]
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps({"tool": self.tool, "files": self.files}, indent=1, sort_keys=True) + "\n")
