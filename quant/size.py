"""What counts against the 16,000,000-byte (decimal) cap: code bytes plus compressed model bytes.

Until a record is packed into one file, the code that ships is train_gpt.py plus every project module it
imported, so we count all of those sources rather than train_gpt.py alone.
"""
from __future__ import annotations

import sys
from pathlib import Path

BYTE_BUDGET = 16_000_000


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


def budget_status(total_bytes: int) -> str:
    if total_bytes <= BYTE_BUDGET:
        return f"under budget by {BYTE_BUDGET - total_bytes} bytes"
    return f"WARNING: OVER the {BYTE_BUDGET}-byte budget by {total_bytes - BYTE_BUDGET} bytes; this cannot be a submission"
