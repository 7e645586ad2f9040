"""What counts against the 16,000,000-byte (decimal) cap: code bytes plus compressed model bytes.

This module is the one place that computes code bytes. A record ships ONE train_gpt.py: the trainer plus the
project modules its run imports, packed and compressed by records/ (records/bundle.py), so `code_size` counts the
bytes of that packed file, not of train_gpt.py alone. Which modules a run imports depends on its knobs: the caller
names the optional ones (train_gpt.optional_modules), the packer adds everything their module-level imports reach.
Inside a packed train_gpt.py (this module's source is then embedded, not on disk) the running file itself is what
ships. Another measure can be swapped in with `set_code_counter`; everything that logs or checks a total goes
through `code_size`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

BYTE_BUDGET = 16_000_000
_PACKED = not Path(__file__).is_file()  # records/bundle.py gives embedded modules a '<packed>/...' __file__


@dataclass(frozen=True)
class CodeSize:
    nbytes: int
    files: list[Path]
    method: str  # how nbytes was obtained, for the log line


def project_sources(root: Path, entry: Path, modules: Sequence[str] = ()) -> list[Path]:
    """The entry script followed by every project module a record of this run ships (sorted): the optional
    `modules` its knobs need and all that the entry's and their module-level imports reach."""
    if _PACKED:
        return [Path(entry).resolve()]
    from records.bundle import shipped_sources  # tooling, never packed itself

    return shipped_sources(Path(root), Path(entry), tuple(modules))


def source_text(path: Path) -> str:
    """A source file's text as Python reads it (a packed train_gpt.py is latin-1; the project's modules UTF-8)."""
    import io
    import tokenize

    data = Path(path).read_bytes()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)


def code_bytes(paths: list[Path]) -> int:
    """Bytes of the single train_gpt.py a record ships for these sources (entry first)."""
    if _PACKED:
        return sum(p.stat().st_size for p in paths)
    from records.bundle import packed_size

    return packed_size(paths)


def _packed_file(root: Path, entry: Path, modules: Sequence[str]) -> CodeSize:
    files = project_sources(root, entry, modules)
    how = ("the running packed train_gpt.py" if _PACKED else
           f"train_gpt.py and {len(files) - 1} project modules packed into one file, records-pack v2")
    return CodeSize(code_bytes(files), files, how)


CodeCounter = Callable[[Path, Path, Sequence[str]], CodeSize]
_code_counter: CodeCounter = _packed_file


def set_code_counter(counter: CodeCounter | None) -> None:
    """Replace how code bytes are measured: counter(root, entry, modules) -> CodeSize (None restores the packed
    file's size)."""
    global _code_counter
    _code_counter = counter or _packed_file


def code_size(root: Path, entry: Path, modules: Sequence[str] = ()) -> CodeSize:
    """Code bytes a record of this run would ship: `entry` (train_gpt.py) packed with the optional `modules` its
    knobs need (train_gpt.optional_modules(args); () for a default run) and their module-level imports."""
    return _code_counter(Path(root), Path(entry), tuple(modules))
