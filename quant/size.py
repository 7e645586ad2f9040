"""What counts against the 16,000,000-byte (decimal) cap: code bytes plus compressed model bytes.

This module is the one place that computes code bytes. Until a record is packed into one file, the code
that ships is train_gpt.py plus every project module it imported, so `code_size` sums those sources. The
record packer can swap in its own measure (e.g. the size of the flattened single file) with
`set_code_counter`; everything that logs or checks a total goes through `code_size`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

BYTE_BUDGET = 16_000_000


@dataclass(frozen=True)
class CodeSize:
    nbytes: int
    files: list[Path]
    method: str  # how nbytes was obtained, for the log line


def project_sources(root: Path, entry: Path) -> list[Path]:
    """The entry script followed by every imported module that lives under `root` (sorted, tests excluded)."""
    root = root.resolve()
    found = set()
    for module in list(sys.modules.values()):
        f = getattr(module, "__file__", None)
        if not f:
            continue
        p = Path(f).resolve()
        if p.suffix == ".py" and p.is_relative_to(root) and "tests" not in p.relative_to(root).parts and p != entry.resolve():
            found.add(p)
    return [entry.resolve()] + sorted(found)


def code_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def _sum_of_sources(root: Path, entry: Path) -> CodeSize:
    files = project_sources(root, entry)
    return CodeSize(code_bytes(files), files, f"{len(files)} files: train_gpt.py and the project modules it imports")


_code_counter: Callable[[Path, Path], CodeSize] = _sum_of_sources


def set_code_counter(counter: Callable[[Path, Path], CodeSize] | None) -> None:
    """Replace how code bytes are measured (None restores the sum of imported sources)."""
    global _code_counter
    _code_counter = counter or _sum_of_sources


def code_size(root: Path, entry: Path) -> CodeSize:
    """Code bytes a record of this run would ship. Call it after every module the run uses is imported."""
    return _code_counter(Path(root), Path(entry))


def budget_status(total_bytes: int) -> str:
    if total_bytes <= BYTE_BUDGET:
        return f"under budget by {BYTE_BUDGET - total_bytes} bytes"
    return f"WARNING: OVER the {BYTE_BUDGET}-byte budget by {total_bytes - BYTE_BUDGET} bytes; this cannot be a submission"


def check_budget(total_bytes: int, label: str) -> None:
    """For tools that must refuse an over-budget artifact (the record tool): raise instead of warn."""
    if total_bytes > BYTE_BUDGET:
        raise ValueError(f"{label}: total {total_bytes} bytes is over the {BYTE_BUDGET}-byte budget by "
                         f"{total_bytes - BYTE_BUDGET}; shrink the model or use a smaller export scheme")
