"""Why Coupled Adam loses bpb here: the trainer's own model, optimizers, data and schedule, replayed in-process with
instruments on the tied embedding (no other change to the training).

For each optimizer setting, over the training run it records per vocabulary row (= token, bucketed by its
frequency in the training text): the update size per step relative to the learning rate (Adam's nominal
per-element step is ~1), the ratio of Adam's per-row denominator to Coupled Adam's shared one, and how much of
the row's gradient comes from the input side of the tied matrix (not zero-sum over the vocabulary, unlike the
output side). At the end: validation loss per target-frequency bucket, row norms, isotropy.

    python -m bench.claims.coupled_probe --out DIR [--steps 200] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import train_gpt  # noqa: E402  (bench scripts may import the trainer)
from bench.claims.data import study_dataset  # noqa: E402
from bench.claims.lm import write_json  # noqa: E402
from bench.claims.lm_experiments import FULL_STEPS, protocol  # noqa: E402
from data.loader import DistributedTokenLoader  # noqa: E402
from data.shards import load_tokens  # noqa: E402
from optim.coupled_adam import CoupledAdam  # noqa: E402
from optim.groups import build_optimizers, set_step_schedule  # noqa: E402
from optim.health import embedding_health  # noqa: E402

SETTINGS = {"adam-0.05": {"TIED_EMBED_LR": "0.05"}, "adam-0.005": {"TIED_EMBED_LR": "0.005"},
            "coupled-0.05": {"EMBED_OPTIMIZER": "coupled_adam", "TIED_EMBED_LR": "0.05"},
            "coupled-0.005": {"EMBED_OPTIMIZER": "coupled_adam", "TIED_EMBED_LR": "0.005"}}
BUCKETS = ((0.0, 0.01), (0.01, 0.1), (0.1, 0.5), (0.5, 1.0))  # frequency-rank quantiles: top 1% of tokens, ...


def bucket_of_rank(vocab: int) -> np.ndarray:
    """bucket index of each frequency rank (0 = most frequent)."""
    q = (np.arange(vocab) + 0.5) / vocab
    return np.searchsorted([b[1] for b in BUCKETS], q, side="right").clip(max=len(BUCKETS) - 1)


def bucket_label(i: int) -> str:
    lo, hi = BUCKETS[i]
    return f"freq. rank {lo:.0%}-{hi:.0%}"


def replay(knobs: dict[str, str], steps: int, counts: np.ndarray, val: torch.Tensor) -> dict:
    """Train like train_gpt.main (CPU, no wall clock, step-based warmdown) and instrument the tied embedding."""
    args = train_gpt.Hyperparameters(env=knobs, device_type="cpu")
    torch.manual_seed(args.seed)
    model = train_gpt.build_model(args)
    optimizers, muon = build_optimizers(model, args)
    emb_opt = optimizers[0]
    loader = DistributedTokenLoader(args.train_files, 0, 1, torch.device("cpu"))
    accum = 8  # the trainer's grad_accum_steps on one process
    V = args.vocab_size
    order = np.argsort(-counts, kind="stable")  # rank -> token
    rank_of = np.empty(V, dtype=np.int64)
    rank_of[order] = np.arange(V)
    bucket = torch.from_numpy(bucket_of_rank(V)[rank_of])  # token -> bucket
    captured = {}

    def keep_input_side(module, inputs, out):
        if out.requires_grad:  # training only
            out.retain_grad()
            captured.update(ids=inputs[0], out=out)

    model.tok_emb.register_forward_hook(keep_input_side)
    upd = np.zeros(V)  # sum over probed steps of per-row update RMS / lr
    denom_ratio = np.zeros(V)  # Adam's per-row denominator / the coupled one (how much bigger coupling makes the step)
    input_share = np.zeros(V)  # |input-side gradient| / |total gradient| per row
    probes = 0
    sum_norms = []
    W = model.tok_emb.weight
    for step in range(steps):
        scale = train_gpt.lr_multiplier(args, step, 0.0)
        g_in = torch.zeros_like(W)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        for _ in range(accum):
            x, y = loader.next_batch(args.train_batch_tokens, args.train_seq_len, accum)
            loss = model(x, y)
            (loss / accum).backward()
            g_in.index_add_(0, captured["ids"].reshape(-1), captured["out"].grad.reshape(-1, W.size(1)))
        set_step_schedule(optimizers, muon, args, step, scale)
        before = W.detach().clone()
        grad = W.grad.detach().clone()
        for opt in optimizers:
            opt.step()
        lr = emb_opt.param_groups[0]["lr"]
        if step >= steps // 4 and lr > 0:  # past the first quarter (Adam's bias correction settled), before the end
            delta = (W.detach() - before).double()
            upd += (delta.pow(2).mean(1).sqrt() / lr).numpy()
            v = emb_opt.state[W]["exp_avg_sq"].double()
            ratio = v.sqrt() / v.mean(0, keepdim=True).sqrt().clamp_min(1e-30)
            denom_ratio += ratio.mean(1).numpy()
            input_share += (g_in.double().norm(dim=1) / grad.double().norm(dim=1).clamp_min(1e-30)).numpy()
            sum_norms.append({"step": step, "sum_update": float(delta.sum(0).norm()), "sum_grad": float(grad.sum(0).norm()),
                              "sum_input_grad": float(g_in.sum(0).norm()),
                              "sum_output_grad": float((grad - g_in).sum(0).norm())})
            probes += 1
    model.eval()
    with torch.no_grad():
        seq = args.train_seq_len
        n = (val.numel() - 1) // seq * seq
        x, y = val[:n].reshape(-1, seq), val[1 : n + 1].reshape(-1, seq)
        nll = torch.cat([model(x[i:i + 16], y[i:i + 16], reduction="none").reshape(-1) for i in range(0, x.size(0), 16)])
        yb = bucket[y.reshape(-1)]
        logits_max = float(model.forward_logits(x[:4]).abs().max())
    E = W.detach()
    mu = E.mean(0)
    per_bucket = []
    for b in range(len(BUCKETS)):
        rows = (bucket == b).numpy()
        targets = yb == b
        per_bucket.append({
            "bucket": bucket_label(b), "tokens": int(rows.sum()), "train_count": int(counts[rows].sum()),
            "val_targets": int(targets.sum()), "val_nll": float(nll[targets].mean()) if targets.any() else None,
            "update_rms_over_lr": float(np.median(upd[rows] / max(probes, 1))),
            "adam_over_coupled_denominator": float(np.median(denom_ratio[rows] / max(probes, 1))),
            "input_grad_share": float(np.median(input_share[rows] / max(probes, 1))),
            "row_norm": float(E[torch.from_numpy(rows)].norm(dim=1).median()),
            "row_dot_mean_dir": float((E[torch.from_numpy(rows)] @ (mu / mu.norm())).median()),
        })
    return {"knobs": knobs, "steps": steps, "val_nll": float(nll.mean()), "per_bucket": per_bucket,
            "health": embedding_health(E), "sum_norms": sum_norms, "max_abs_logit": logits_max,
            "logit_softcap": args.logit_softcap, "is_coupled": isinstance(emb_opt, CoupledAdam),
            "per_row_update_rms_over_lr": (upd / max(probes, 1)).tolist(), "frequency_rank": rank_of.tolist()}


def _replay_worker(knobs: dict[str, str], steps: int, counts: np.ndarray, val: torch.Tensor) -> dict:
    torch.set_num_threads(1)
    return replay(knobs, steps, counts, val)


def run(out: Path, steps: int | None, quick: bool, jobs: int = 1, log=print) -> dict:
    path = out / "coupled_adam" / "probe.json"
    if path.is_file():
        return json.loads(path.read_text())
    ds = study_dataset(1024, quick)
    steps = steps or (4 if quick else FULL_STEPS)
    p = protocol(ds, quick)  # the coupled_adam experiment's own protocol
    base = {**p.trainer_knobs(steps), "SEED": "1", "NUM_LAYERS": str(p.layers), "MODEL_DIM": str(p.dim),
            "NUM_HEADS": str(p.heads), "NUM_KV_HEADS": str(p.kv_heads)}
    counts = np.bincount(load_tokens(str(ds.data_path / "fineweb_train_*.bin")).astype(np.int64), minlength=ds.vocab)
    val = torch.from_numpy(load_tokens(str(ds.data_path / "fineweb_val_*.bin")).astype(np.int64))
    if quick:
        val = val[: 64 * 64 + 1]
    result = {"data": ds.to_json(), "buckets": [bucket_label(i) for i in range(len(BUCKETS))], "settings": {}}
    log(f"coupled probe: {', '.join(SETTINGS)} ({jobs} at a time)")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        futures = {name: pool.submit(_replay_worker, {**base, **knobs}, steps, counts, val)
                   for name, knobs in SETTINGS.items()}
        result["settings"] = {name: f.result() for name, f in futures.items()}
    write_json(path, result)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=FULL_STEPS)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args(argv)
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # inherited by the replay processes
    r = run(a.out, a.steps, a.quick, a.jobs)
    for name, s in r["settings"].items():
        print(name, f"val_nll {s['val_nll']:.4f}", [(b["bucket"], round(b["val_nll"] or math.nan, 3),
                                                    round(b["update_rms_over_lr"], 3), round(b["adam_over_coupled_denominator"], 3))
                                                   for b in s["per_bucket"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
