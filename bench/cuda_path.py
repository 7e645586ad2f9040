"""In-process checks of the trainer's CUDA path, for bench.gpu_check: each returns a result dict.

They build everything with the trainer's own functions (train_gpt.Hyperparameters, build_model, attach_qat,
build_optimizers, compile_model) and step it the way train_gpt.main does (autocast forward, scaled backward,
every optimizer's step), on synthetic tokens from a sparse Markov chain (learnable: the loss must fall).
"""
from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_gpt  # noqa: E402
from arch.layers import keep_float_names, set_matmul_dtype  # noqa: E402
from arch.gpt import CONTROL_TENSOR_NAME_PATTERNS  # noqa: E402
from optim.groups import build_optimizers  # noqa: E402
from quant.qat import attach_qat, set_qat  # noqa: E402


def markov_batches(vocab: int, batch: int, seq_len: int, count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` (x, y) batches from a chain where each token has 4 possible successors: ~1.4 nats is reachable."""
    g = torch.Generator().manual_seed(seed)
    succ = torch.randint(0, vocab, (vocab, 4), generator=g)
    out = []
    for _ in range(count):
        seq = torch.empty(batch, seq_len + 1, dtype=torch.int64)
        seq[:, 0] = torch.randint(0, vocab, (batch,), generator=g)
        pick = torch.randint(0, 4, (batch, seq_len), generator=g)
        for t in range(seq_len):
            seq[:, t + 1] = succ[seq[:, t], pick[:, t]]
        out.append((seq[:, :-1].contiguous(), seq[:, 1:].contiguous()))
    return out


def autocast_for(args, device: torch.device):
    """The trainer's autocast: bf16 when DTYPE=bf16, else none."""
    if args.dtype == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(env: dict, device: torch.device, backend: str = "inductor"):
    """(args, base_model, compiled_model, optimizers) exactly as train_gpt.main builds them."""
    args = train_gpt.Hyperparameters(env=env, device_type=device.type)
    torch.manual_seed(args.seed)
    base = train_gpt.build_model(args).to(device)
    set_matmul_dtype(base, torch.bfloat16 if args.matmul_dtype == "bf16" else None)  # as train_gpt.main trains
    if args.qat_scheme:
        keep_float = CONTROL_TENSOR_NAME_PATTERNS + tuple(sorted(keep_float_names(base)))
        attach_qat(base, args.qat_scheme, args.mix, keep_float, args.quant_float_max_numel)
    optimizers, muon = build_optimizers(base, args)
    compiled = train_gpt.compile_model(args, base, muon, backend=backend)
    return args, base, compiled, optimizers


def graph_count() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def train_kind(name: str, env: dict, device: str, steps: int, backend: str = "inductor") -> dict:
    """Train one MLP kind `steps` steps compiled (fullgraph) under the env's DTYPE; report losses, memory, graphs."""
    dev = torch.device(device)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    result = {"section": "kinds", "case": name, "status": "FAIL"}
    t0 = time.perf_counter()
    try:
        args, base, compiled, optimizers = build(env, dev, backend)
        autocast = autocast_for(args, dev)
        batches = markov_batches(args.vocab_size, args.train_batch_tokens // args.train_seq_len, args.train_seq_len, 4, seed=1)
        batches = [(x.to(dev), y.to(dev)) for x, y in batches]
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        losses, times, graphs_after_warmup = [], [], 0
        for step in range(steps):
            sync(dev)
            t = time.perf_counter()
            x, y = batches[step % len(batches)]
            with autocast():
                loss = compiled(x, y)
            loss.backward()
            for opt in optimizers:
                opt.step()
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            sync(dev)
            times.append(1000.0 * (time.perf_counter() - t))
            if step == 1:
                graphs_after_warmup = graph_count()
        recompiled = graph_count() - graphs_after_warmup
        first, last = losses[0], min(losses[-3:])
        problems = []
        if not all(math.isfinite(v) for v in losses):
            problems.append("non-finite loss")
        if not last < first - 0.05:
            problems.append(f"loss did not fall ({first:.3f} -> {last:.3f})")
        if recompiled:
            problems.append(f"{recompiled} recompilation(s) after step 2")
        result.update(status="FAIL" if problems else "PASS", detail="; ".join(problems),
                      loss=f"{first:.3f}->{last:.3f}", step_ms=statistics.median(times[2:] or times),
                      peak_mib=torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan"),
                      graphs=graph_count(), dtype=args.dtype)
    except Exception as e:  # a graph break under fullgraph=True lands here: its first line is the finding
        result["detail"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
    result["seconds"] = time.perf_counter() - t0
    return result


def qat_under_compile(env: dict, device: str, backend: str = "inductor") -> dict:
    """Switching QAT on after the model is compiled must change the compiled forward, to what eager QAT computes."""
    dev = torch.device(device)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    result = {"section": "qat", "case": f"{env.get('QAT_SCHEME')} on after compile", "status": "FAIL"}
    t0 = time.perf_counter()
    try:
        args, base, compiled, optimizers = build(env, dev, backend)
        autocast = autocast_for(args, dev)
        x, y = markov_batches(args.vocab_size, args.train_batch_tokens // args.train_seq_len, args.train_seq_len, 1, seed=2)[0]
        x, y = x.to(dev), y.to(dev)
        for _ in range(3):  # real steps first: the zero-initialized projections get weights worth rounding
            with autocast():
                compiled(x, y).backward()
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)

        def loss_of(model) -> torch.Tensor:  # per-target losses: far more sensitive than their mean
            with torch.no_grad(), autocast():
                return model(x, y, reduction="none").float()

        off = loss_of(compiled)
        graphs = graph_count()
        set_qat(base, True)
        on, eager_on = loss_of(compiled), loss_of(base)
        with autocast():  # the straight-through backward under compile, QAT on
            compiled(x, y).backward()
        grads_finite = all(torch.isfinite(p.grad).all() for p in base.parameters() if p.grad is not None)
        set_qat(base, False)
        back = loss_of(compiled)
        change, mismatch = (on - off).abs().max().item(), (on - eager_on).abs().max().item()
        problems = []
        if change <= 1e-6:
            problems.append("the compiled forward ignored QAT (per-target losses unchanged)")
        if mismatch > 0.25 * change:
            problems.append(f"compiled QAT forward differs from eager QAT by {mismatch:.2e} (QAT changed it by {change:.2e})")
        if (back - off).abs().max().item() > 0.25 * change:
            problems.append("switching QAT off did not restore the forward")
        if not grads_finite:
            problems.append("non-finite gradients with QAT on")
        result.update(status="FAIL" if problems else "PASS", detail="; ".join(problems),
                      loss=f"QAT changes per-target loss by {change:.2e}; compiled vs eager {mismatch:.2e}",
                      graphs=graph_count() - graphs)
    except Exception as e:
        result["detail"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
    result["seconds"] = time.perf_counter() - t0
    return result


def s5_scans(device: str, lengths: tuple[int, ...], batch: int, states: int, repeats: int) -> list[dict]:
    """Triton scan vs FFT scan vs the float64 sequential recurrence: max relative difference, fwd+bwd time."""
    from arch.kernels import HAVE_TRITON, triton_diag_scan
    from arch.s5 import fft_scan, sequential_scan

    dev = torch.device(device)
    rows = []
    for T in lengths:
        row = {"section": "s5_scan", "case": f"T={T} B={batch} P'={states}", "status": "FAIL"}
        if not HAVE_TRITON:
            row.update(status="SKIP" if dev.type == "cpu" else "FAIL", detail="triton is not installed")
            rows.append(row)
            continue
        try:
            g = torch.Generator().manual_seed(T)
            log_a = torch.complex(-torch.rand(states, generator=g) * 0.05 - 1e-3, torch.randn(states, generator=g) * 0.5)
            b = torch.complex(torch.randn(batch, T, states, generator=g), torch.randn(batch, T, states, generator=g))
            ref = sequential_scan(torch.exp(log_a.to(torch.complex128)), b.to(torch.complex128))
            log_a, b = log_a.to(dev), b.to(dev)
            timing = {}
            outs = {}
            for name, fn in (("triton", lambda la, bb: triton_diag_scan(torch.exp(la), bb)), ("fft", fft_scan)):
                la, bb = log_a.clone().requires_grad_(), b.clone().requires_grad_()
                outs[name] = fn(la, bb).detach().to("cpu", torch.complex128)
                times = []
                for _ in range(repeats):
                    la.grad = bb.grad = None
                    sync(dev)
                    t = time.perf_counter()
                    fn(la, bb).real.sum().backward()
                    sync(dev)
                    times.append(1000.0 * (time.perf_counter() - t))
                timing[name] = statistics.median(times)
            scale = ref.abs().max().item()
            rel = {k: (v - ref).abs().max().item() / scale for k, v in outs.items()}
            ok = rel["triton"] < 1e-3 and rel["fft"] < 1e-3  # fp32 over ~1/|Re log a| ~ 1000 remembered steps
            row.update(status="PASS" if ok else "FAIL", detail="" if ok else "scan differs from the float64 recurrence",
                       loss=f"max rel diff triton {rel['triton']:.1e} fft {rel['fft']:.1e}",
                       step_ms=timing["triton"], fft_ms=timing["fft"],
                       speedup=f"triton {timing['fft'] / timing['triton']:.2f}x fft (fwd+bwd)")
        except Exception as e:
            row["detail"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        rows.append(row)
    return rows
