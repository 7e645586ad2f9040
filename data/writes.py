"""How our tools write files: atomically, and never over a file they did not write.

- `atomic_write(path, data)`: the bytes go to a temporary name in the same folder, are fsynced, then renamed over
  `path`. A full disk, a crash or a Ctrl-C leaves the old file (or none), never a truncated one.
- `claim_log(logfile, out_dir)`: a training run's log, created (never over another run's) and locked while it runs.
- `WouldOverwrite`: what a writer raises instead of replacing a file it did not write; data.ledger.Ledger (the
  files a tool wrote into a folder, by content hash) raises it too.
"""
from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


class WouldOverwrite(FileExistsError):
    """Writing would replace a file this tool did not create; the message says which and what to do."""


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None]) -> Path:
    """Write `data` (bytes, text, or a function that writes into a binary file object) to `path` atomically."""
    path, tmp = Path(path), None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, _new_file_mode())  # mkstemp makes 0600; a plain open() would have honoured the umask
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk: name the file the write was for, not the temporary one
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"writing {path} failed ({e.strerror})") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _new_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def claim_log(logfile: Path, out_dir: Path) -> tuple[object, str | None]:
    """Create a training run's log and output folder, refusing to overwrite anything; returns (open log, note).

    The open log file holds an exclusive lock while the run lives. A log left by a run of this name that wrote no
    artifact (interrupted, or it failed) is kept under another name, so the name can be used again."""
    import fcntl

    if out_dir.exists() and not out_dir.is_dir():
        raise WouldOverwrite(f"OUTPUT_DIR={out_dir} is a file, not a folder; pick another OUTPUT_DIR (or unset it)")
    has_artifacts = out_dir.is_dir() and any(out_dir.iterdir())
    note = None
    if logfile.exists():
        if has_artifacts:
            raise WouldOverwrite(f"{logfile} already exists and its run wrote {out_dir}; pick a new RUN_ID (or move the "
                                 "old log and artifacts away) so nothing is overwritten")
        with open(logfile, "a", encoding="utf-8") as old:
            try:
                fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise WouldOverwrite(f"{logfile} belongs to a trainer still running with this RUN_ID; pick a new RUN_ID") from None
        kept = next(p for k in itertools.count(1) if not (p := logfile.with_name(f"{logfile.stem}.incomplete-{k}.txt")).exists())
        os.replace(logfile, kept)
        note = f"the earlier run with this RUN_ID wrote no artifact; its log is kept as {kept}"
    elif has_artifacts:
        raise WouldOverwrite(f"OUTPUT_DIR {out_dir} is not empty; pick a new RUN_ID/OUTPUT_DIR so nothing is overwritten")
    for folder, knob in ((logfile.parent, "the working folder (logs/)"), (out_dir, "OUTPUT_DIR")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(e.errno, f"cannot create {folder} ({e.strerror}); check {knob}") from None
    lock = open(logfile, "x", encoding="utf-8")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return lock, note
