"""Experiment 2: in-context associative recall, generated in-process, for the attention model and the MLP-slot
mixers, with attention and without it (the S5 seed's claim: Hyena-S5 solves associative recall, attention-free).

Tokens: keys 0..K-1, values K..2K-1, a filler 2K (vocabulary 2K+1; K=16 gives 33). Each sequence draws its own
random key -> value map, so the answer can only come from the context. Two tasks:
- `ar` (H3/Hyena style, one query): a stream of (key, value) pairs with keys drawn with replacement (a key recurs,
  always with its value), then a query key that occurred before; the answer is its value. Trained on every value
  whose key already occurred (each one is a recall), scored on the final answer only.
- `mqar` (Zoology style, multi-query): N distinct (key, value) pairs first, then the N keys again as queries, in
  random order and at random places among filler tokens; every answer is trained and scored. The distance from a
  query back to its pair grows with the length, so long sequences are harder for a fading state.
Accuracy = the argmax over the full vocabulary equals the value, on held-out sequences from another RNG stream.

Models: arch.gpt.GPT (the project's model: RoPE attention, the MLP slot of MLP_KIND, resid mix, U-Net skips) with
2 blocks, d=64. The attention-free variant ("<kind>-noattn") is the same model with every block's attention
module replaced by `NoMixing`, which returns zeros and has no parameters: the block becomes
x + mlp_scale * mixer(norm(x)), so the MLP-slot mixer is the only place where positions can exchange information.
Every arm is trained alike: AdamW, warmup then cosine decay, on fresh random batches (no fixed training set).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("ar", "mqar")


@dataclass(frozen=True)
class RecallConfig:
    """One training run's task and model sizes."""

    task: str = "mqar"
    length: int = 128
    keys: int = 16
    pairs: int = 4  # mqar: distinct pairs (and queries)
    dim: int = 64
    layers: int = 2
    heads: int = 2
    batch: int = 32
    steps: int = 600  # 400 steps at d=32, batch 16 left every arm, attention included, near chance
    lr_scale: float = 1.0  # multiplies the trainer's default matrix and scalar LRs
    eval_sequences: int = 512

    @property
    def vocab(self) -> int:
        return 2 * self.keys + 1

    @property
    def filler(self) -> int:
        return 2 * self.keys


def make_batch(cfg: RecallConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs [n, T-1], targets [n, T-1], train mask, eval mask) are returned as (x, y, masks) with masks [2, n, T-1]:
    masks[0] = positions trained on, masks[1] = positions scored. Targets are the next token."""
    if cfg.task not in TASKS:
        raise ValueError(f"task {cfg.task!r} must be one of {TASKS}")
    T, K = cfg.length, cfg.keys
    seq = np.full((n, T), cfg.filler, dtype=np.int64)
    train = np.zeros((n, T), dtype=bool)
    score = np.zeros((n, T), dtype=bool)
    values = rng.integers(0, K, size=(n, K)) + K  # each sequence's own map key -> value
    rows = np.arange(n)[:, None]
    if cfg.task == "ar":
        if T < 4 or T % 2:
            raise ValueError(f"ar needs an even length >= 4, got {T}")
        pairs = T // 2 - 1
        ks = rng.integers(0, K, size=(n, pairs))
        seq[:, 0:2 * pairs:2], seq[:, 1:2 * pairs:2] = ks, values[rows, ks]
        seen = np.zeros((n, K), dtype=bool)
        for i in range(pairs):  # a value is a recall when its key occurred before
            train[:, 2 * i + 1] = seen[np.arange(n), ks[:, i]]
            seen[np.arange(n), ks[:, i]] = True
        # the query: a key that occurred (uniform over the distinct ones present)
        pick = rng.random((n, K)) * seen
        q = pick.argmax(axis=1)
        seq[:, T - 2], seq[:, T - 1] = q, values[np.arange(n), q]
        train[:, T - 1] = score[:, T - 1] = True
    else:
        N = cfg.pairs
        if N > K or T < 4 * N:
            raise ValueError(f"mqar needs pairs <= keys and length >= 4 * pairs, got pairs={N} keys={K} length={T}")
        ks = np.argsort(rng.random((n, K)), axis=1)[:, :N]  # N distinct keys
        seq[:, 0:2 * N:2], seq[:, 1:2 * N:2] = ks, values[rows, ks]
        slots = (T - 2 * N) // 2  # 2-token slots after the pairs; N of them hold (query, answer)
        chosen = np.sort(np.argsort(rng.random((n, slots)), axis=1)[:, :N], axis=1)
        order = np.argsort(rng.random((n, N)), axis=1)
        qk = ks[rows, order]
        pos = 2 * N + 2 * chosen
        seq[rows, pos], seq[rows, pos + 1] = qk, values[rows, qk]
        train[rows, pos + 1] = score[rows, pos + 1] = True
    return seq[:, :-1], seq[:, 1:], np.stack((train[:, 1:], score[:, 1:]))


class NoMixing(nn.Module):
    """Stands in for a block's attention: zeros, no parameters (the block's residual keeps x unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def build_model(kind: str, attention: bool, cfg: RecallConfig) -> nn.Module:
    from arch.gpt import GPT
    from arch.mlp import MixerConfig

    mixer = MixerConfig(s5_state_dim=64, s5_blocks=4)  # P' = 32 complex states, blocks of 16 (HiPPO-N)
    model = GPT(cfg.vocab, cfg.layers, cfg.dim, cfg.heads, cfg.heads, 2.0, True, 0.02, 30.0, 10000.0, 1.5,
                mlp_kind=kind, mixer_config=mixer)
    if not attention:
        for block in model.blocks:
            block.attn = NoMixing()
    return model


def harness_optimizers(model: nn.Module, cfg: RecallConfig) -> list[torch.optim.Optimizer]:
    """The trainer's own split (optim/groups.py): Muon for block matrices, Adam for the embedding, scalars and every
    SSM tensor, at the trainer's default learning rates."""
    from types import SimpleNamespace

    from optim.groups import build_optimizers

    args = SimpleNamespace(embed_optimizer="adam", tie_embeddings=True, tied_embed_lr=0.05, embed_lr=0.6, head_lr=0.008,
                           matrix_lr=0.04 * cfg.lr_scale, scalar_lr=0.04 * cfg.lr_scale, adam_wd=0.0, muon_wd=0.0,
                           beta1=0.9, beta2=0.95, adam_eps=1e-8, muon_momentum=0.95, muon_backend_steps=5,
                           coupled_adam_scale=1.0)
    return build_optimizers(model, args)[0]


def lr_scale(step: int, cfg: RecallConfig) -> float:
    """Linear warmup over the first tenth, then linear decay to 0 over the last fifth (the trainer's warmdown)."""
    warm, down = max(1, cfg.steps // 10), max(1, cfg.steps // 5)
    return min((step + 1) / warm, 1.0, (cfg.steps - step) / down)


def train_and_evaluate(kind: str, attention: bool, cfg: RecallConfig, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model(kind, attention, cfg)
    optimizers = harness_optimizers(model, cfg)
    rng = np.random.default_rng([seed, 0])  # training stream; evaluation uses [seed, 1]
    t0 = time.perf_counter()
    curve = []
    for step in range(cfg.steps):
        x, y, masks = (torch.from_numpy(a) for a in make_batch(cfg, cfg.batch, rng))
        scale = lr_scale(step, cfg)
        for opt in optimizers:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * scale
        logits = model.forward_logits(x).float()
        loss = F.cross_entropy(logits[masks[0]], y[masks[0]])
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            curve.append((step, loss.item()))
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{kind} attention={attention} {cfg}: non-finite loss at step {step}")
    train_s = time.perf_counter() - t0
    model.eval()
    correct = total = 0
    eval_rng = np.random.default_rng([seed, 1])
    with torch.no_grad():
        for start in range(0, cfg.eval_sequences, cfg.batch):
            x, y, masks = (torch.from_numpy(a) for a in make_batch(cfg, min(cfg.batch, cfg.eval_sequences - start), eval_rng))
            pred = model.forward_logits(x).argmax(-1)
            correct += int((pred[masks[1]] == y[masks[1]]).sum())
            total += int(masks[1].sum())
    return {"accuracy": correct / total, "scored": total, "final_train_loss": curve[-1][1], "curve": curve,
            "train_seconds": train_s, "params": sum(p.numel() for p in model.parameters()),
            "torch_threads": torch.get_num_threads()}


# ---------- the study: arms x lengths x tasks x seeds, one process per run, resumable ----------

@dataclass(frozen=True)
class RecallArm:
    name: str
    kind: str
    attention: bool


# With attention in every block, recall is attention's job whatever the MLP slot holds (relu2 is that model); the
# claim is about the mixers alone, so they run attention-free, next to relu2 without attention (no mixing: chance).
ARMS = (RecallArm("attention", "relu2", True), RecallArm("relu2-noattn", "relu2", False), RecallArm("s5-noattn", "s5", False),
        RecallArm("hyena_s5-noattn", "hyena_s5", False), RecallArm("wave-noattn", "wave", False))
LENGTHS = (64, 128)
SEEDS = (1, 2, 3)


def study_grid(quick: bool) -> list[tuple[RecallArm, RecallConfig, int]]:
    if quick:
        base = RecallConfig(dim=16, heads=2, batch=8, steps=4, eval_sequences=16)
        lengths, seeds = (32, 64), (1, 2)
    else:
        base, lengths, seeds = RecallConfig(), LENGTHS, SEEDS
    grid = []
    for seed in seeds:  # seed-major: partial results cover every arm and length
        for task in TASKS:
            for length in lengths:
                for arm in ARMS:
                    grid.append((arm, dataclasses.replace(base, task=task, length=length), seed))
    return grid


def run_name(arm: RecallArm, cfg: RecallConfig, seed: int) -> str:
    """Names the file of a finished run; the config digest keeps a changed setting from reusing old results."""
    digest = hashlib.sha1(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode()).hexdigest()[:6]
    return f"{arm.name}__{cfg.task}__T{cfg.length}__seed{seed}__{digest}"


def _worker(arm: RecallArm, cfg: RecallConfig, seed: int, path: str) -> str:
    torch.set_num_threads(1)
    result = train_and_evaluate(arm.kind, arm.attention, cfg, seed)
    record = {"experiment": "recall", "arm": arm.name, "order": ARMS.index(arm) if arm in ARMS else 0,
              "kind": arm.kind, "attention": arm.attention, "seed": seed, "status": "ok", "task": cfg.task,
              "length": cfg.length, "config": dataclasses.asdict(cfg), "data": {"name": f"synthetic-{cfg.task}",
              "fingerprint": f"K{cfg.keys}-V{cfg.vocab}"}, "steps": cfg.steps, **result}
    from bench.claims.lm import write_json

    write_json(Path(path), record)
    return path


def run_study(out: Path, quick: bool, jobs: int, log=print) -> None:
    runs_dir = out / "recall" / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = [(a, c, s) for a, c, s in study_grid(quick) if not (runs_dir / f"{run_name(a, c, s)}.json").is_file()]
    log(f"recall: {len(todo)} runs to do in {runs_dir}")
    if not todo:
        return
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # inherited by the spawned workers
    failures = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = {pool.submit(_worker, a, c, s, str(runs_dir / f"{run_name(a, c, s)}.json")): (a, c, s) for a, c, s in todo}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                a, c, s = futures[fut]
                try:
                    path = fut.result()
                    acc = json.loads(Path(path).read_text())["accuracy"]
                    log(f"recall: {run_name(a, c, s)} accuracy {acc:.3f}")
                except Exception as e:  # keep the others going; the run is retried on the next invocation
                    failures.append(f"{run_name(a, c, s)}: {e!r}")
                    log(f"recall: FAILED {run_name(a, c, s)}: {e!r}")
    if failures:
        print("recall: failed runs (rerun to retry):\n  " + "\n  ".join(failures), file=sys.stderr)


def report(records: list[dict], folder: Path, plots: bool) -> str:
    """Accuracy per (task, arm, length): mean ± std over seeds; the plot is accuracy vs length, one panel per task."""
    from bench.claims.report import markdown, plt_module, runs_csv, write_csv
    from bench.claims.stats import difference, fmt_mean_std, mean_std

    arms = [a.name for a in ARMS if any(r["arm"] == a.name for r in records)]
    tasks = [t for t in TASKS if any(r["task"] == t for r in records)]
    lengths = sorted({r["length"] for r in records})
    cfg = records[0]["config"]
    chance = 1.0 / cfg["keys"]

    def acc(task, arm, length) -> dict[int, float]:
        return {r["seed"]: r["accuracy"] for r in records
                if r["task"] == task and r["arm"] == arm and r["length"] == length and r["status"] == "ok"}

    sections, csv_rows = [], []
    for task in tasks:
        rows = []
        for arm in arms:
            params = next((r["params"] for r in records if r["arm"] == arm and r["task"] == task), None)
            cells = [arm, f"{params:,}" if params else "–"]
            for L in lengths:
                a = acc(task, arm, L)
                cells.append(fmt_mean_std(list(a.values()), 3) + (f" (n={len(a)})" if len(a) != 3 else ""))
                m, sd = mean_std(list(a.values()))
                d = difference(a, acc(task, "attention", L)) if arm != "attention" else None
                csv_rows.append([task, arm, L, params, len(a), m, sd] + ([d.diff, d.ci_low, d.ci_high, d.p_welch] if d else [None] * 4))
            rows.append(cells)
        sections.append(f"## {task}\n\n" + markdown(["arm", "params", *[f"T={L}" for L in lengths]], rows))
    write_csv(folder / "summary.csv", ["task", "arm", "length", "params", "seeds", "accuracy_mean", "accuracy_std",
                                       "delta_vs_attention", "ci_low", "ci_high", "p_welch"], csv_rows)
    runs_csv(records, folder / "runs.csv", {"task": lambda r: r["task"], "length": lambda r: r["length"],
                                            "accuracy": lambda r: r["accuracy"], "train_seconds": lambda r: r["train_seconds"]})
    head = (f"# Associative recall (synthetic, in-process)\n\n{cfg['keys']} keys, {cfg['keys']} values, vocabulary "
            f"{2 * cfg['keys'] + 1}; mqar: {cfg['pairs']} pairs and {cfg['pairs']} queries; {cfg['layers']} blocks, d={cfg['dim']}, "
            f"{cfg['steps']} steps x {cfg['batch']} sequences; accuracy on {cfg['eval_sequences']} held-out sequences "
            f"(chance {chance:.3f}); mean ± sample std over seeds")
    if plots:
        plt = plt_module()
        fig, axs = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.5), squeeze=False)
        for ax, task in zip(axs[0], tasks):
            for arm in arms:
                ms = [mean_std(list(acc(task, arm, L).values())) for L in lengths]
                ax.errorbar(lengths, [m for m, _ in ms], yerr=[0 if math.isnan(s) else s for _, s in ms], marker="o",
                            capsize=3, label=arm, linestyle="--" if arm.endswith("-noattn") else "-")
            ax.axhline(chance, color="grey", lw=1, ls=":", label="chance")
            ax.set_xscale("log", base=2)
            ax.set_xticks(lengths, [str(L) for L in lengths])
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("sequence length")
            ax.set_ylabel("recall accuracy")
            ax.set_title(task)
        axs[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "recall.png", dpi=120)
        plt.close(fig)
    return "\n\n".join([head, *sections])
