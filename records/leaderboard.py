"""`python -m records leaderboard`: every record folder, sorted by val_bpb.

Tolerant of the metadata defects real records have (HARNESS.md A8): `mean_val_bpb` / `code_bytes` spellings, a
bpb stored in `val_loss`, missing author/name/date, `submission_ternary.json`, no json at all, a json that
disagrees with its logs. The logs are the evidence: when the json lacks a bpb the logs' mean is used, and any
disagreement is shown in the notes column.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from records.folder import RECORDS_ROOT, find_json, find_logs, is_non_record, load_json, record_folders
from records.logs import parse_log

_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})_?(.*)$")


@dataclass
class Entry:
    folder: Path
    name: str
    author: str
    date: str
    track: str
    val_bpb: float | None
    bpb_source: str  # where val_bpb came from
    seed_bpbs: list[float] = field(default_factory=list)
    bytes_total: int | None = None
    notes: list[str] = field(default_factory=list)


def _float(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v else None  # NaN is no score


def _int(x) -> int | None:
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def _seed_bpbs(data: dict) -> list[float]:
    """Per-seed bpb from `seed_results` {seed: {val_bpb}} or a `seeds` dict {seed: {val_bpb} | bpb}."""
    out = []
    for key in ("seed_results", "seeds"):
        block = data.get(key)
        if isinstance(block, dict):
            for v in block.values():
                b = _float(v.get("val_bpb")) if isinstance(v, dict) else _float(v)
                if b is not None:
                    out.append(b)
            if out:
                return out
    return out


def read_entry(folder: Path) -> Entry:
    m = _DATE.match(folder.name)
    entry = Entry(folder=folder, name=(m.group(2) if m else folder.name) or folder.name, author="?", date=m.group(1) if m else "?",
                  track=folder.parent.name.removeprefix("track_"), val_bpb=None, bpb_source="none")
    data: dict = {}
    jpath = find_json(folder)
    if jpath is None:
        entry.notes.append("no submission json")
    else:
        loaded, problem = load_json(jpath)
        if problem:
            entry.notes.append(problem)
        data = loaded or {}
        if jpath.name != "submission.json":
            entry.notes.append(f"json is {jpath.name}")
    for key in ("name", "author", "track"):
        if isinstance(data.get(key), str) and data[key].strip():
            setattr(entry, key, data[key].strip())
        elif data:
            entry.notes.append(f"no {key}")
    if isinstance(data.get("date"), str) and data["date"][:10]:
        entry.date = data["date"][:10]
    entry.bytes_total = _int(data.get("bytes_total")) or _int(data.get("artifact_bytes_max"))
    entry.seed_bpbs = _seed_bpbs(data)

    scores = []
    for p in find_logs(folder):
        log = parse_log(p)
        if log.val_bpb is not None:
            scores.append(log)
    log_bpbs = [lg.val_bpb for lg in scores]
    if entry.bytes_total is None and scores:
        totals = [lg.total_bytes for lg in scores if lg.total_bytes]
        entry.bytes_total = max(totals) if totals else None

    for key, source in (("val_bpb", "json"), ("mean_val_bpb", "json mean_val_bpb")):
        if _float(data.get(key)) is not None:
            entry.val_bpb, entry.bpb_source = _float(data[key]), source
            break
    if entry.val_bpb is None and entry.seed_bpbs:
        entry.val_bpb, entry.bpb_source = statistics.fmean(entry.seed_bpbs), "json seed mean"
    if entry.val_bpb is None and log_bpbs:
        entry.val_bpb, entry.bpb_source = statistics.fmean(log_bpbs), "logs"
        entry.notes.append("bpb from the logs")
    if entry.val_bpb is None and _float(data.get("val_loss")) is not None:
        # Seen in the wild: a json whose val_loss field holds the bpb. Shown, but flagged.
        entry.val_bpb, entry.bpb_source = _float(data["val_loss"]), "json val_loss (no val_bpb)"
        entry.notes.append("bpb read from the val_loss field")
    if entry.val_bpb is not None and log_bpbs and entry.bpb_source.startswith("json"):
        mean_logs = statistics.fmean(log_bpbs)
        if abs(mean_logs - entry.val_bpb) > 5e-4 and not any(abs(b - entry.val_bpb) <= 5e-4 for b in log_bpbs):
            entry.notes.append(f"logs say {mean_logs:.5f}")
    if not entry.seed_bpbs and log_bpbs:
        entry.seed_bpbs = log_bpbs
    return entry


def leaderboard(root: Path = RECORDS_ROOT) -> list[Entry]:
    entries = [read_entry(f) for f in record_folders(root)]
    return sorted(entries, key=lambda e: (e.val_bpb is None, e.val_bpb if e.val_bpb is not None else 0.0, e.date, e.name))


def format_table(entries: list[Entry], markdown: bool = False) -> str:
    head = ["#", "val_bpb", "seeds", "bytes", "track", "date", "name", "author", "notes"]
    rows = []
    for i, e in enumerate(entries, 1):
        rows.append([
            str(i), "-" if e.val_bpb is None else f"{e.val_bpb:.5f}", str(len(e.seed_bpbs) or ""),
            "-" if e.bytes_total is None else f"{e.bytes_total:,}", ("non-record" if is_non_record(e.track) else e.track),
            e.date, e.name, e.author, "; ".join(e.notes),
        ])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])
