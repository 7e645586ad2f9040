"""`python -m records unpack FILE DIR`: write the sources a packed train_gpt.py embeds into DIR, never elsewhere.

The file is read, never executed. Every target is checked before anything is written: keys are plain relative
.py paths (records/bundle.py refuses others), no target may pass through a symbolic link, and a file that already
exists is replaced only with `force` (and never when it is a link). Each file is written to a temporary name
next to it, then renamed, so an interrupted unpack leaves no half-written source.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from records.bundle import Bundle, unpack


class UnpackError(ValueError):
    """The file or DIR cannot be unpacked safely; the message names the problem and the fix."""


def _check_target(out: Path, rel: str) -> Path:
    target = out.joinpath(*rel.split("/"))
    here = out
    for part in rel.split("/"):
        here = here / part
        if here.is_symlink():
            raise UnpackError(f"{here} is a symbolic link: unpack never writes through links; pick an empty DIR")
    if not target.resolve().is_relative_to(out.resolve()):
        raise UnpackError(f"{rel} would be written outside {out}; the file is crafted or corrupted")
    if target.exists() and not target.is_file():
        raise UnpackError(f"{target} exists and is not a file; pick an empty DIR")
    return target


def write_sources(bundle: Bundle, out: Path, force: bool = False) -> list[Path]:
    """Write every embedded source under `out`; UnpackError (before writing anything) if one cannot be written safely."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UnpackError(f"{out} is a file, not a folder: pass a folder (it is created if missing)")
    targets = {rel: _check_target(out, rel) for rel in bundle.sources}
    existing = [str(t) for t in targets.values() if t.exists()]
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise UnpackError(f"{existing[0]}{more} already exist{'s' if not more else ''}: pass --force to replace them, or pick an "
                          "empty DIR")
    written = []
    for rel, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(bundle.sources[rel])
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


def unpack_file(file: Path, out: Path, force: bool = False) -> list[Path]:
    file = Path(file)
    if not file.is_file():
        raise UnpackError(f"{file}: no such file; pass a packed train_gpt.py (records/<track>/<folder>/train_gpt.py)")
    try:
        bundle = unpack(file.read_bytes())
    except ValueError as e:
        raise UnpackError(f"{file}: {e}") from None
    return write_sources(bundle, out, force)
