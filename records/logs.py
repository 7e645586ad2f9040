"""Read a training log: its score, sizes, seed, config and code snapshot, in every format the public records use.

**A log's score** (the one definition; leaderboard, verify and pack all use it): the LAST final score line of the
file. A final score line is any line that names an evaluation and carries `val_bpb:<y>` (usually after
`val_loss:<x>`, with or without a space after the colon, possibly with words between them), whatever the name:
`final_int8_zlib_roundtrip_exact`, `final_sliding_window`, `legal_ttt_exact`, `quantized_ttt_phased`,
`final_ttt_lora`, `final_sliding ... (stride=16, T=0.90)`, ... Not score lines: step lines (`step:N/M ...`,
`N/M ...`), diagnostics of unexported weights (`diagnostic ...`, `DIAGNOSTIC ...`, `pre-quantization ...`), and
metric echoes whose name is itself a metric (`val_bpb:   1.12`). An earlier `..._exact` line does NOT beat a later
line (a TTT score printed after the roundtrip is the run's score); when the last line has an `<name>_exact` twin
the twin's 8 decimals are used. A file holding several appended runs is read as its last run.

Lines may start with a unix or ISO timestamp, a torchrun `[rankN]:` or a logging `INFO:` prefix; they (and colour
codes) are removed before reading. Seeds come from `seed:N`, a `Hyperparameters:` block (`  seed: N`), a `key=value`
config line (`seed=N`), else the file name (`train_seed42.log`).
The counted total is the last `Total submission size <tag>: N bytes` / `... | Total submission: N bytes` /
`budget:N/16000000` line that is not the raw fp32 size (the untagged line equal to code + `Serialized model: N`).
"""
from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
# A leading timestamp, launcher or logging prefix: `1776142360.538 `, `2026-04-13T10:00:00Z `, `[12:00:01] `,
# `[rank0]: `, `INFO:root:`, `2026-04-13 10:00:00,123 - INFO - `; and terminal colour codes anywhere.
_PREFIX = re.compile(r"^(?:\d{9,11}(?:\.\d+)?\s+|\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\]?\s*(?:-\s+)?"
                     r"|\[\d\d:\d\d:\d\d(?:\.\d+)?\]\s+|\[(?:rank|default)\d+\]:?\s*"
                     r"|\[(?:INFO|DEBUG|WARNING|WARN)\]\s*[:-]?\s*|(?:INFO|DEBUG|WARNING|WARN)(?::\w+:|\s*[:-]\s*))+", re.M)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SCORE = re.compile(rf"^(?P<name>[A-Za-z][\w.+\-]*)(?P<rest>[^\n]*?)\bval_bpb:\s*(?P<bpb>{_NUM})", re.M | re.I)
_LOSS = re.compile(rf"\bval_loss:\s*(?P<loss>{_NUM}|None)", re.I)
_STEP = re.compile(r"^(?:step[:\s]\s*)?\d+/\d+\b", re.I)
_NOT_SCORES = re.compile(r"^(?:diagnostic|pre[-_]?quant|prequant|val_|step$)", re.I)
_TOTAL = re.compile(r"\bTotal submission(?: size)?(?P<tag>[^:\n|]*?):\s*(?P<n>\d[\d,]*) bytes", re.I)
_BUDGET = re.compile(r"\bbudget:(?P<n>\d+)/\d+\b")
_MODEL = re.compile(r"^Serialized model(?P<tag>[^:\n]*):\s*(?P<n>\d+) bytes(?:.*?\bpath:(?P<path>\S+))?", re.M)
_INLINE_MODEL = re.compile(r"(?P<tag>\S+) model:\s*(?P<n>\d+) bytes\s*\|\s*Total submission", re.I)
_CODE = re.compile(r"^Code size(?P<kind> \([^)]*\))?:\s*(?P<n>\d+) bytes|^artifact:.*\bcode:(?P<n2>\d+)\b", re.M)
_SEED = re.compile(r"^\s*seed\s*:\s*(\d+)\s*$|(?:^|\s)seed=(\d+)(?=\s|$)", re.M)  # never `seed = 0`: that is code
_SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.I)
_PARAMS = re.compile(r"^(?:model_params|params):\s*(\d+)\b", re.M)
_COVER = re.compile(r"^val_targets_scored:(\d+)/(\d+)", re.M)
_SNAPSHOT = re.compile(r"^code_snapshot:(.*)$", re.M)
_ENV = re.compile(r"^knobs_from_env:(.*)$", re.M)
_DEVICE = re.compile(r"^world_size:(\d+) grad_accum_steps:\d+ device:(\S+)", re.M)
_STOP = re.compile(r"stopping_early: wallclock_cap train_time:\s*(\d+)ms step:\s*(\d+)/(\d+)")
_TRAIN_STEP = re.compile(r"^(?:step:)?(\d+)/(\d+) (?:train|val)_loss:[^\n]*?train_time:\s*(\d+)ms", re.M)
_WALLCLOCK = re.compile(r"max_wallclock_seconds:([\d.]+)")
_PYTORCH = re.compile(r"^Running PyTorch (\S+)", re.M)
_SNAPSHOT_END = "=" * 100 + "\nRunning Python"


@dataclass(frozen=True)
class Score:
    """One final score line: `name` as printed, its numbers, and where it starts in the (normalized) text."""
    name: str
    val_loss: float | None
    val_bpb: float
    pos: int


@dataclass
class RunLog:
    path: Path
    text: str = field(repr=False)
    scores: list[Score] = field(default_factory=list, repr=False)  # every final score line, in order
    score_name: str | None = None  # the score line's name, e.g. quantized_ttt_phased
    val_loss: float | None = None
    val_bpb: float | None = None
    total_tag: str | None = None
    total_bytes: int | None = None
    model_bytes: int | None = None
    artifact_path: str | None = None
    code_bytes: int | None = None
    seed: int | None = None
    model_params: int | None = None
    targets_scored: tuple[int, int] | None = None
    world_size: int | None = None
    device: str | None = None
    steps: int | None = None
    train_time_ms: int | None = None
    max_wallclock_seconds: float | None = None
    pytorch: str | None = None
    env: dict[str, str] | None = None  # knobs set from the environment (None: the log has no knobs_from_env line)
    snapshot_files: list[str] | None = None

    @property
    def finished(self) -> bool:
        """The run printed a final score (see the module docstring); a log cut before it has none."""
        return self.val_bpb is not None

    @property
    def exact(self) -> bool:
        """The score comes from an `..._exact` line (8 decimals), as this harness's trainer prints last."""
        return bool(self.score_name and self.score_name.endswith("_exact"))

    @property
    def score_is_finite(self) -> bool:
        return self.val_bpb is not None and math.isfinite(self.val_bpb) and (self.val_loss is None or math.isfinite(self.val_loss))

    def snapshot(self) -> dict[str, str]:
        """{relative path: source} of the code the run logged (train_gpt.py writes every source it shipped)."""
        if not self.snapshot_files:
            return {}
        out, pos = {}, 0
        headers = [f"# ===== {f} =====\n" for f in self.snapshot_files]
        starts = []
        for h in headers:
            i = self.text.find(h, pos)
            if i < 0:
                raise ValueError(f"{self.path}: the code snapshot of {h.strip()} is missing; the log is cut or edited")
            starts.append(i)
            pos = i + len(h)
        end = self.text.find(_SNAPSHOT_END, pos)
        if end < 0:
            raise ValueError(f"{self.path}: the code snapshot has no end marker; the log is cut or edited")
        bounds = starts[1:] + [end]
        for f, h, s, e in zip(self.snapshot_files, headers, starts, bounds):
            body = self.text[s + len(h) : e]
            out[f] = body[:-1] if body.endswith("\n") else body  # train_gpt.py appends one newline per source
        return out


def _last(pattern: re.Pattern, text: str):
    m = None
    for m in pattern.finditer(text):
        pass
    return m


def _number(text: str) -> float:
    return float(text)  # float() reads nan / inf / -inf too: a non-finite score is kept, so tools can refuse it


def normalize(text: str) -> str:
    """The log's text without carriage returns and leading timestamps / launcher prefixes on each line."""
    return _PREFIX.sub("", _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n")))


def score_lines(text: str) -> list[Score]:
    """Every final score line of (normalized) `text`, in order; see the module docstring for what counts."""
    out = []
    for m in _SCORE.finditer(text):
        name = m.group("name")
        line_end = text.find("\n", m.start())
        line = text[m.start() : line_end if line_end >= 0 else len(text)]
        if _STEP.match(line) or _NOT_SCORES.match(name):
            continue
        loss = _LOSS.search(line[: m.end("rest") - m.start()])
        val_loss = None if loss is None or loss.group("loss") == "None" else _number(loss.group("loss"))
        out.append(Score(name, val_loss, _number(m.group("bpb")), m.start()))
    return out


def final_score(scores: list[Score]) -> Score | None:
    """The log's score: the last score line, with the digits of its `_exact` twin when there is one."""
    if not scores:
        return None
    last = scores[-1]
    twins = [s for s in scores if s.name == last.name + "_exact" and s.pos < last.pos]
    if twins and abs(twins[-1].val_bpb - last.val_bpb) < 1e-3:
        return twins[-1]
    return last


def _totals(text: str, code: int | None) -> list[tuple[int, str, int, re.Match]]:
    """(position, tag, bytes, match) of every counted-total line, raw fp32 totals left out."""
    raw_models = {int(m.group("n")) for m in _MODEL.finditer(text) if not m.group("tag").strip()}
    out = []
    for m in _TOTAL.finditer(text):
        tag, n = m.group("tag").strip(), int(m.group("n").replace(",", ""))
        if not tag and code is not None and any(n == code + r for r in raw_models):
            continue  # `Total submission size: N` = code + the unquantized fp32 model: never the submission's size
        out.append((m.start(), tag, n, m))
    out += [(m.start(), "budget", int(m.group("n")), m) for m in _BUDGET.finditer(text)]
    return sorted(out, key=lambda t: t[0])


def parse_log(path: Path | str, text: str | None = None) -> RunLog:
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace") if text is None else text
    log = RunLog(path=path, text=text)
    if m := _SNAPSHOT.search(text):
        log.snapshot_files = [f for f in m.group(1).strip().split(",") if f]
        text = _without_snapshot(text, log.snapshot_files)  # logged source code must never be read as metrics
    text = normalize(text)
    log.scores = score_lines(text)
    best = final_score(log.scores)
    if best is not None:
        log.score_name, log.val_loss, log.val_bpb = best.name, best.val_loss, best.val_bpb
    codes = list(_CODE.finditer(text))
    if codes:
        compressed = [m for m in codes if m.group("kind") and "compressed" in m.group("kind") and "un" not in m.group("kind")]
        chosen = (compressed or codes)[-1]
        log.code_bytes = int(chosen.group("n") or chosen.group("n2"))
    totals = _totals(text, log.code_bytes)
    if totals:
        pos, log.total_tag, log.total_bytes, match = totals[-1]
        inline = _INLINE_MODEL.search(text, text.rfind("\n", 0, pos) + 1, match.end())
        models = [m for m in _MODEL.finditer(text, 0, pos) if m.group("tag").strip()]
        same_tag = [m for m in models if m.group("tag").strip() == log.total_tag]
        if inline:
            log.model_bytes = int(inline.group("n"))
        elif same_tag or models:
            chosen = (same_tag or models)[-1]
            log.model_bytes, log.artifact_path = int(chosen.group("n")), chosen.group("path")
    if m := _last(_SEED, text):
        log.seed = int(m.group(1) or m.group(2))
    elif m := _SEED_IN_NAME.search(path.name):  # a log that never prints its seed: train_seed42.log
        log.seed = int(m.group(1))
    if m := _last(_PARAMS, text):
        log.model_params = int(m.group(1))
    if m := _last(_COVER, text):
        log.targets_scored = (int(m.group(1)), int(m.group(2)))
    if m := _last(_DEVICE, text):
        log.world_size, log.device = int(m.group(1)), m.group(2)
    if m := _last(_TRAIN_STEP, text):
        log.steps, log.train_time_ms = int(m.group(1)), int(m.group(3))
    if m := _last(_STOP, text):
        log.train_time_ms, log.steps = int(m.group(1)), int(m.group(2))
    if m := _WALLCLOCK.search(text):
        log.max_wallclock_seconds = float(m.group(1))
    if m := _last(_PYTORCH, text):
        log.pytorch = m.group(1)
    if m := _last(_ENV, text):
        log.env = dict(item.split("=", 1) for item in shlex.split(m.group(1)) if "=" in item)
    return log


def _without_snapshot(text: str, files: list[str]) -> str:
    start = text.find(f"# ===== {files[0]} =====\n") if files else -1
    end = text.find(_SNAPSHOT_END, start)
    return text if start < 0 or end < 0 else text[:start] + text[end:]
