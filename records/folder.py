"""Where things live in a record folder, and the track names (HARNESS.md A1, A8)."""
from __future__ import annotations

import json
from pathlib import Path

from quant.size import BYTE_BUDGET  # decimal bytes: code + compressed model

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORDS_ROOT = REPO_ROOT / "records"

# --track value -> (folder under records/, submission.json "track" value)
TRACKS = {
    "record": ("track_10min_16mb", "10min_16mb"),
    "non-record": ("track_non_record_16mb", "non-record-16mb"),
}
NON_RECORD_SPELLINGS = ("non-record", "non_record", "nonrecord")


def is_non_record(track: str | None) -> bool:
    return bool(track) and any(s in track.lower() for s in NON_RECORD_SPELLINGS)


def find_json(folder: Path) -> Path | None:
    """submission.json, or the variants some records use (submission_ternary.json)."""
    main = folder / "submission.json"
    if main.is_file():
        return main
    others = sorted(folder.glob("submission*.json"))
    return others[0] if others else None


NOT_LOGS = ("requirements.txt",)
LOG_SEARCH_DEPTH = 3  # the folder, logs/, ttt_pr1767/, logs_experiment/...: records keep logs in subfolders


def find_logs(folder: Path) -> list[Path]:
    """Candidate train logs: *.log and *.txt anywhere in the folder (a few levels deep), requirements.txt excluded.
    Whether one really is a train log is for the reader to say (records/claims.py keeps those with a run in them)."""
    found = []

    def walk(d: Path, depth: int) -> None:
        for p in sorted(d.iterdir()):
            if p.name.startswith((".", "_")) or (p.is_symlink() and p.is_dir()):  # a linked folder may lead out of the record
                continue
            if p.is_dir() and depth < LOG_SEARCH_DEPTH:
                walk(p, depth + 1)
            elif p.is_file() and p.suffix in (".log", ".txt") and p.name not in NOT_LOGS:
                found.append(p)

    if folder.is_dir():
        walk(folder, 1)
    return found


def load_json(path: Path) -> tuple[dict | None, str | None]:
    """(data, problem): never raises, so one broken file cannot stop a whole leaderboard."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"{path.name} does not parse ({e})"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object"
    return data, None


def record_folders(root: Path) -> list[Path]:
    """records/<track>/<folder>/ for every folder that holds a submission json or a log."""
    out = []
    if not root.is_dir():
        return out
    for track in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for folder in sorted(p for p in track.iterdir() if p.is_dir()):
            if find_json(folder) or find_logs(folder):
                out.append(folder)
    return out
