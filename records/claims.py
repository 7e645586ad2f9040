"""What a record folder claims (its submission json) and which of its logs back each claim.

One reading serves the leaderboard, `records verify` (our packed layout and the official one) and the
significance baseline:

- the claim: `val_bpb` (or `mean_val_bpb`; a bpb stored in `val_loss` is a last resort, flagged), the seeds it
  lists (`seed_results` keys, `seeds` as a list or a dict, a single `seed`), per-seed bpb / loss / bytes, and the
  size (`bytes_total`, else `artifact_bytes_max`);
- the runs: train logs with a final score (records/logs.py defines it); a log duplicating another (same seed, score
  and total, e.g. `train.log` next to `train_seed1337.log`) counts once. Logs are matched to the listed seeds by seed
  AND score, so a mislabelled seed or a claim quoting an earlier line of its log is caught. With no seeds listed,
  the reported runs are the logs of the claimed configuration (the parameter count of the log carrying the claimed
  score); logs of other configurations are ablations;
- the seeds: the listed ones, else the distinct seeds of the reported runs (4 logs of one seed are 1 seed);
- problems: every inconsistency between the claim and the evidence, as one line each, never averaged away.

Numbers are compared at the precision the json states (1.081 matches 1.08100288; 1.1556 matches 1.15555486).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from records.folder import BYTE_BUDGET, find_json, find_logs, load_json
from records.logs import RunLog, parse_log

REQUIRED_FIELDS = ("name", "github_id", "val_bpb")  # what the public rules ask of submission.json, beside metadata
METADATA_FIELDS = ("author", "date", "blurb")


@dataclass(frozen=True)
class Problem:
    """A defect of the record: `kind` says which part (json, logs, claims = json vs logs, size)."""
    kind: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class SeedClaim:
    bpb: float | None = None
    loss: float | None = None
    nbytes: int | None = None  # the seed's artifact_bytes / bytes_total: a total or a model size, records differ
    field_names: tuple[str, ...] = ()


@dataclass
class Run:
    """One reported run: the seed the submission gives it, its log (None: a listed seed without one), its claim."""
    seed: int | None
    log: RunLog | None
    claim: SeedClaim | None = None


def run_key(run: Run):
    """The seed a run counts under; a log without a seed line counts as a seed of its own."""
    return run.seed if run.seed is not None or run.log is None else f"?{run.log.path.name}"


@dataclass
class Reading:
    folder: Path
    json_path: Path | None = None
    data: dict = field(default_factory=dict)
    json_problem: str | None = None
    bpb: float | None = None  # the claimed val_bpb
    bpb_field: str | None = None
    listed_seeds: list[int] | None = None  # None: the json lists none
    seed_claims: dict[int, SeedClaim] = field(default_factory=dict)
    bytes_claim: int | None = None
    bytes_field: str | None = None
    logs: list[RunLog] = field(default_factory=list)  # every train log found
    runs: list[Run] = field(default_factory=list)
    ablations: list[RunLog] = field(default_factory=list)  # logs of other configurations than the claimed one
    duplicates: list[tuple[RunLog, RunLog]] = field(default_factory=list)  # (copy, original)
    problems: list[Problem] = field(default_factory=list)  # the claim and the evidence disagree: defects of the record
    remarks: list[str] = field(default_factory=list)  # true and worth showing, but not a defect

    def flag(self, kind: str, text: str) -> None:
        self.problems.append(Problem(kind, text))

    def problem_texts(self, *kinds: str) -> list[str]:
        return [p.text for p in self.problems if not kinds or p.kind in kinds]

    @property
    def seeds(self) -> list:
        """Distinct seeds of the submission: the listed ones, else those of the reported runs (unknown ones apart)."""
        if self.listed_seeds is not None:
            return list(dict.fromkeys(self.listed_seeds))
        return list(dict.fromkeys(run_key(run) for run in self.runs))

    def seed_scores(self) -> dict:
        """{seed: bpb} per reported seed: the mean of its logged runs, else its claimed value."""
        out = {}
        for seed in self.seeds:
            runs = [r for r in self.runs if run_key(r) == seed]
            logged = [r.log.val_bpb for r in runs if r.log is not None and r.log.finished]
            claimed = [r.claim.bpb for r in runs if r.claim and r.claim.bpb is not None]
            if logged:
                out[seed] = statistics.fmean(logged)
            elif claimed:
                out[seed] = claimed[0]
        return out

    def logged_runs(self) -> list[RunLog]:
        return [r.log for r in self.runs if r.log is not None]


# --------------------------------------------------------------------------------------------------
# Numbers as the json states them


def as_float(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        return None
    try:
        v = float(x)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def as_int(x) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, float) and x.is_integer():
        return int(x)
    return x if isinstance(x, int) else None


def tolerance(claimed: float) -> float:
    """Half a unit of the claim's last stated decimal (at most 5e-4): what `1.1556` promises about the run."""
    text = repr(float(claimed))
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 8
    return min(0.5 * 10.0 ** -decimals, 5e-4) + 1e-9


def agrees(value: float | None, claimed: float | None, slack: float = 0.0) -> bool:
    """`value` rounds to `claimed` at the claim's precision (`slack`: the rounding already in `value`)."""
    return (value is not None and claimed is not None and math.isfinite(value)
            and abs(value - claimed) <= tolerance(claimed) + slack)


def fmt(x: float) -> str:
    return f"{x:.8f}".rstrip("0").rstrip(".") if abs(x) < 100 else f"{x:g}"


# --------------------------------------------------------------------------------------------------
# The json


def _seed_key(key) -> int | None:
    try:
        return int(str(key).strip())
    except ValueError:
        return None


def _seed_claim(value) -> SeedClaim:
    if not isinstance(value, dict):
        return SeedClaim(bpb=as_float(value))
    byte_fields = [k for k in ("bytes_total", "artifact_bytes", "total_bytes") if as_int(value.get(k)) is not None]
    return SeedClaim(bpb=as_float(value.get("val_bpb")), loss=as_float(value.get("val_loss")),
                     nbytes=as_int(value[byte_fields[0]]) if byte_fields else None, field_names=tuple(byte_fields))


def read_claim(reading: Reading) -> None:
    data = reading.data
    for key in ("val_bpb", "mean_val_bpb"):
        if as_float(data.get(key)) is not None:
            reading.bpb, reading.bpb_field = as_float(data[key]), key
            break
    listed: list[int] = []
    for key in ("seed_results", "seeds"):
        block = data.get(key)
        if isinstance(block, dict):
            for k, v in block.items():
                seed = _seed_key(k)
                if seed is not None:
                    listed.append(seed)
                    claim = _seed_claim(v)
                    if seed not in reading.seed_claims or claim.bpb is not None:
                        reading.seed_claims[seed] = claim
        elif isinstance(block, list):
            listed += [s for s in (_seed_key(x) for x in block) if s is not None]
    if not listed and _seed_key(data.get("seed")) is not None and not isinstance(data.get("seed"), bool):
        listed = [_seed_key(data["seed"])]
    reading.listed_seeds = list(dict.fromkeys(listed)) or None
    for key in ("bytes_total", "artifact_bytes_max"):
        if as_int(data.get(key)) is not None:
            reading.bytes_claim, reading.bytes_field = as_int(data[key]), key
            break


# --------------------------------------------------------------------------------------------------
# Matching logs to the claim


def _closest(logs: list[RunLog], claimed: float) -> RunLog | None:
    matching = [lg for lg in logs if agrees(lg.val_bpb, claimed)]
    return min(matching, key=lambda lg: abs(lg.val_bpb - claimed)) if matching else None


def _dedupe(reading: Reading, logs: list[RunLog]) -> list[RunLog]:
    seen: dict[tuple, RunLog] = {}
    out = []
    for lg in logs:
        key = (lg.seed, lg.score_name, lg.val_bpb, lg.val_loss, lg.total_bytes)
        if key in seen:
            reading.duplicates.append((lg, seen[key]))
            continue
        seen[key] = lg
        out.append(lg)
    return out


def _match_listed(reading: Reading, scored: list[RunLog]) -> None:
    """One run per listed seed (more when a seed has several logs and no per-seed score to choose by)."""
    used: set[int] = set()
    for seed in reading.listed_seeds:
        claim = reading.seed_claims.get(seed)
        own = [lg for lg in scored if lg.seed == seed]
        if claim is not None and claim.bpb is not None:
            log = _closest(own, claim.bpb)
            if log is None:
                other = _closest([lg for lg in scored if id(lg) not in used and lg.seed not in reading.listed_seeds], claim.bpb)
                if other is not None:
                    reading.flag("claims", f"seed {seed}: its score {fmt(claim.bpb)} is in {other.path.name}, which logged seed "
                                            f"{other.seed if other.seed is not None else '(none)'}")
                    log = other
                elif own:
                    log = own[0]
                    earlier = next((s for s in log.scores if agrees(s.val_bpb, claim.bpb)), None)
                    if earlier is not None:
                        reading.flag("claims", f"seed {seed}: claimed {fmt(claim.bpb)} is the earlier `{earlier.name}` line of "
                                                f"{log.path.name}, but the run's final score is `{log.score_name}` {fmt(log.val_bpb)}")
                    else:
                        reading.flag("claims", f"seed {seed}: claimed {fmt(claim.bpb)} but {log.path.name} scores {fmt(log.val_bpb)}")
            if log is not None:
                used.add(id(log))
                if claim.loss is not None and log.val_loss is not None and not agrees(log.val_loss, claim.loss):
                    reading.flag("claims", f"seed {seed}: claimed val_loss {fmt(claim.loss)} but {log.path.name} has "
                                            f"{fmt(log.val_loss)}")
            reading.runs.append(Run(seed, log, claim))
        elif own:
            for log in own:
                used.add(id(log))
                reading.runs.append(Run(seed, log, claim))
        else:
            reading.runs.append(Run(seed, None, claim))
    missing = [s for s in reading.listed_seeds if not any(r.seed == s and r.log is not None for r in reading.runs)]
    if missing:
        reading.flag("logs", f"no log for seed{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
                                f"(the json lists {len(reading.listed_seeds)})")
    reading.ablations = [lg for lg in scored if id(lg) not in used]


def _match_unlisted(reading: Reading, scored: list[RunLog]) -> None:
    """No seeds listed: the runs are the logs of the claimed configuration (by parameter count)."""
    groups: dict[int | None, list[RunLog]] = {}
    for lg in scored:
        groups.setdefault(lg.model_params, []).append(lg)
    chosen = scored
    if len(groups) > 1 and None not in groups:
        anchor = _closest(scored, reading.bpb) if reading.bpb is not None else None
        if anchor is not None:
            chosen = groups[anchor.model_params]
        elif reading.bpb is not None:
            by_mean = [g for g in groups.values() if agrees(statistics.fmean(lg.val_bpb for lg in g), reading.bpb)]
            chosen = by_mean[0] if by_mean else max(groups.values(), key=len)
        else:
            chosen = max(groups.values(), key=len)
    reading.runs = [Run(lg.seed, lg) for lg in chosen]
    reading.ablations = [lg for lg in scored if all(lg is not c for c in chosen)]


def _check_score(reading: Reading) -> None:
    """The claimed val_bpb against its seeds: the mean of the seeds' logs (or of its own per-seed claims)."""
    if reading.bpb is None:
        return
    claimed, name = reading.bpb, reading.bpb_field
    per_seed_claims = [c.bpb for s, c in reading.seed_claims.items() if c.bpb is not None]
    if reading.listed_seeds and len(per_seed_claims) == len(reading.listed_seeds):
        mean = statistics.fmean(per_seed_claims)
        if not agrees(mean, claimed, slack=max(tolerance(c) for c in per_seed_claims)):  # a mean of rounded numbers
            reading.flag("claims", f"{name} {fmt(claimed)} is not the mean of its own per-seed scores ({fmt(mean)})")
        return
    by_seed: dict = {}
    for run in reading.runs:
        if run.log is not None:
            by_seed.setdefault(run_key(run), []).append(run.log.val_bpb)
    scores = {k: statistics.fmean(v) for k, v in by_seed.items()}
    logged = reading.logged_runs()
    if not logged:
        return
    if reading.listed_seeds and len(scores) < len(reading.seeds):
        if len(logged) == 1 and not agrees(logged[0].val_bpb, claimed):
            lg = logged[0]
            reading.flag("claims", f"{name} {fmt(claimed)} ({len(reading.seeds)} seeds) but its only log ({lg.path.name}, seed "
                                    f"{lg.seed}) scores {fmt(lg.val_bpb)}")
        return
    mean = statistics.fmean(scores.values())
    if agrees(mean, claimed):
        return
    if len(scores) == 1:
        if not any(agrees(lg.val_bpb, claimed) for lg in logged):
            only = logged[0] if len(logged) == 1 else None
            reading.flag("claims", f"{name} {fmt(claimed)} but its only log ({only.path.name}) scores {fmt(only.val_bpb)}" if only
                                    else f"{name} {fmt(claimed)} matches none of the {len(logged)} logged runs (mean {fmt(mean)})")
        return
    single = _closest(logged, claimed)
    if single is not None:
        reading.flag("claims", f"{name} {fmt(claimed)} is seed {single.seed}'s score ({single.path.name}), not the mean of the "
                                f"{len(scores)} seeds ({fmt(mean)})")
    else:
        reading.flag("claims", f"{name} {fmt(claimed)} is not the mean of the {len(scores)} seeds' logged scores ({fmt(mean)})")


def _check_bytes(reading: Reading) -> None:
    runs = [r for r in reading.runs if r.log is not None]
    over = [r.log for r in runs if r.log.total_bytes is not None and r.log.total_bytes > BYTE_BUDGET]
    if over:
        worst = max(over, key=lambda lg: lg.total_bytes)
        reading.flag("size", f"{len(over)} logged total{'s are' if len(over) > 1 else ' is'} over the {BYTE_BUDGET:,}-byte cap "
                                f"(largest {worst.total_bytes:,}, {worst.path.name})")
    totals = [r.log for r in runs if r.log.total_bytes is not None]
    if reading.bytes_claim is not None and totals:
        largest = max(totals, key=lambda lg: lg.total_bytes)
        sizes = {lg.total_bytes for lg in totals} | {lg.model_bytes for lg in totals if lg.model_bytes}
        if reading.bytes_claim in sizes and reading.bytes_claim < largest.total_bytes:
            owner = next(lg for lg in totals if reading.bytes_claim in (lg.total_bytes, lg.model_bytes))
            reading.remarks.append(f"{reading.bytes_field} {reading.bytes_claim:,} is {owner.path.name}'s; the largest logged total "
                                   f"is {largest.total_bytes:,} ({largest.path.name})")
        elif reading.bytes_claim < largest.total_bytes:
            reading.flag("claims", f"{reading.bytes_field} {reading.bytes_claim:,} matches no logged size and is below the "
                                    f"largest logged total {largest.total_bytes:,} ({largest.path.name})")
        elif reading.bytes_claim not in sizes:  # above every logged total: untraceable, but it understates nothing
            reading.remarks.append(f"{reading.bytes_field} {reading.bytes_claim:,} matches no logged size (largest total "
                                   f"{largest.total_bytes:,})")
    for run in runs:
        claim = run.claim
        if claim is None or claim.nbytes is None:
            continue
        logs = [lg for lg in reading.logs if lg.seed == run.seed and lg.total_bytes is not None] or \
               ([run.log] if run.log.total_bytes is not None else [])
        if logs and not any(claim.nbytes in (lg.total_bytes, lg.model_bytes) for lg in logs):
            lg = logs[0]
            reading.flag("claims", f"seed {run.seed}: {claim.field_names[0]} {claim.nbytes:,} but {lg.path.name} logs total "
                                    f"{lg.total_bytes:,}" + (f" (model {lg.model_bytes:,})" if lg.model_bytes else ""))


def read_folder(folder: Path) -> Reading:
    """Everything the folder claims and shows, and every disagreement between the two (never raises on bad input)."""
    folder = Path(folder)
    reading = Reading(folder=folder)
    reading.json_path = find_json(folder)
    if reading.json_path is None:
        reading.flag("json", "no submission.json")
    else:
        data, problem = load_json(reading.json_path)
        reading.data, reading.json_problem = data or {}, problem
        if problem:
            reading.flag("json", problem)
        elif reading.json_path.name != "submission.json":
            reading.flag("json", f"the json is named {reading.json_path.name}, not submission.json")
        read_claim(reading)
        missing = [k for k in REQUIRED_FIELDS if k != "val_bpb" and not (isinstance(reading.data.get(k), str) and reading.data[k].strip())]
        if as_float(reading.data.get("val_bpb")) is None:
            missing.append("val_bpb" + (f" (it has {reading.bpb_field})" if reading.bpb_field else ""))
        if data is not None and missing:
            reading.flag("json", f"the json lacks {', '.join(missing)}")
    reading.logs = [lg for lg in (parse_log(p) for p in find_logs(folder)) if lg.finished or "train_loss" in lg.text]
    if not reading.logs:
        reading.flag("logs", "no train log")
    scored = _dedupe(reading, [lg for lg in reading.logs if lg.finished])
    if reading.listed_seeds is not None:
        _match_listed(reading, scored)
    else:
        _match_unlisted(reading, scored)
    _check_score(reading)
    _check_bytes(reading)
    return reading
