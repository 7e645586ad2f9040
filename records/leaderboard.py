"""`python -m records leaderboard`: every record folder, sorted by val_bpb.

Each folder is read by records/claims.py: the bpb is the json's (`val_bpb`, else `mean_val_bpb`, else the mean of
its per-seed scores), else the mean over the seeds of the runs the submission reports (their logs' final scores);
a bpb found only in `val_loss` is shown but flagged. Seeds are the distinct seeds of the reported runs, bytes the
json's `bytes_total` (else `artifact_bytes_max`, else the largest logged total of the reported runs), the date the
json's (else the folder's). Every disagreement inside a record is a note; nothing is averaged away.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from records.claims import Reading, as_float, as_int, read_folder
from records.folder import RECORDS_ROOT, is_non_record, record_folders

_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})_?(.*)$")
_FALLBACK_BYTES = ("artifact_bytes", "artifact_size_bytes", "artifact_bytes_mean")  # sizes some jsons give instead


class LeaderboardError(ValueError):
    """The root to rank is not a records folder; the message says what to pass instead."""


@dataclass
class Entry:
    folder: Path
    name: str
    author: str
    date: str
    track: str
    val_bpb: float | None
    bpb_source: str  # where val_bpb came from
    seed_bpbs: list[float] = field(default_factory=list)  # one per seed (logged, else claimed)
    n_seeds: int = 0
    bytes_total: int | None = None
    notes: list[str] = field(default_factory=list)
    reading: Reading | None = field(default=None, repr=False)


def _bpb(reading: Reading) -> tuple[float | None, str]:
    if reading.bpb is not None:
        return reading.bpb, f"json {reading.bpb_field}"
    claimed = [c.bpb for c in reading.seed_claims.values() if c.bpb is not None]
    if claimed:
        return statistics.fmean(claimed), "json per-seed mean"
    logged = list(reading.seed_scores().values())  # no per-seed claims: these are the logs' scores
    if logged:
        return statistics.fmean(logged), "logs"
    if as_float(reading.data.get("val_loss")) is not None:  # seen in the wild: a json whose val_loss holds the bpb
        return as_float(reading.data["val_loss"]), "json val_loss (no val_bpb)"
    return None, "none"


def _bytes(reading: Reading) -> int | None:
    if reading.bytes_claim is not None:
        return reading.bytes_claim
    totals = [lg.total_bytes for lg in reading.logged_runs() if lg.total_bytes is not None]
    if totals:
        return max(totals)
    return next((as_int(reading.data[k]) for k in _FALLBACK_BYTES if as_int(reading.data.get(k)) is not None), None)


def read_entry(folder: Path) -> Entry:
    reading = read_folder(folder)
    data = reading.data
    m = _DATE.match(folder.name)
    date = data.get("date") if isinstance(data.get("date"), str) else ""
    val_bpb, source = _bpb(reading)
    notes = reading.problem_texts() + reading.remarks
    if source == "json val_loss (no val_bpb)":
        notes.append("bpb read from the val_loss field")
    elif source == "logs":
        notes.append("bpb from the logs")
    text = lambda key, default: data[key].strip() if isinstance(data.get(key), str) and data[key].strip() else default  # noqa: E731
    return Entry(folder=folder, name=text("name", (m.group(2) if m else "") or folder.name), author=text("author", "?"),
                 date=date[:10] if re.match(r"\d{4}-\d{2}-\d{2}", date) else (m.group(1) if m else "?"),
                 track=folder.parent.name.removeprefix("track_"), val_bpb=val_bpb, bpb_source=source,
                 seed_bpbs=list(reading.seed_scores().values()), n_seeds=len(reading.seeds), bytes_total=_bytes(reading),
                 notes=notes, reading=reading)


def leaderboard(root: Path = RECORDS_ROOT) -> list[Entry]:
    """Every record folder under `root` (records/<track>/<folder>/), best bpb first; LeaderboardError if there is none."""
    root = Path(root)
    if not root.exists():
        raise LeaderboardError(f"--root {root}: no such folder; pass the folder that holds the track folders "
                               f"(e.g. records/ or a checkout's records/)")
    if not root.is_dir():
        raise LeaderboardError(f"--root {root} is a file; pass the folder that holds the track folders (e.g. records/)")
    folders = record_folders(root)
    if not folders:
        raise LeaderboardError(f"--root {root} holds no record folder (<track>/<date>_<name>/ with a submission json or a "
                               "train log); pass the records/ folder itself")
    entries = [read_entry(f) for f in folders]
    return sorted(entries, key=lambda e: (e.val_bpb is None, e.val_bpb if e.val_bpb is not None else 0.0, e.date, e.name))


def format_table(entries: list[Entry], markdown: bool = False) -> str:
    head = ["#", "val_bpb", "seeds", "bytes", "track", "date", "name", "author", "notes"]
    rows = []
    for i, e in enumerate(entries, 1):
        rows.append([
            str(i), "-" if e.val_bpb is None else f"{e.val_bpb:.5f}", str(e.n_seeds or ""),
            "-" if e.bytes_total is None else f"{e.bytes_total:,}", ("non-record" if is_non_record(e.track) else e.track),
            e.date, e.name, e.author, "; ".join(e.notes),
        ])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])
