"""Evaluation benchmark: plain vs sliding-window vs score-first TTT on one set of weights, with eval tokens/s.

    python -m bench.eval_speed --artifact artifacts/<RUN_ID>/final_model.int8.ptz              # knobs from the env
    python -m bench.eval_speed --artifact final_model.int8.ptz --strides 256,64,16 --ttt full,lora NUM_LAYERS=9
    python -m bench.eval_speed --random-init --max-targets 20000                             # speed only

Loads the weights the way eval.audit does (the .ptz artifact is dequantized, i.e. the roundtripped model that
train_gpt.py scores), takes the validation split and tokenizer from the knobs (the offline sample when DATA_PATH
is unset), and prints one row per evaluation: bpb, seconds, scored targets per second and forwarded tokens per
second. Each evaluation is warmed up on random tokens first, so compile time is not counted.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_gpt  # noqa: E402
from data.shards import load_tokens  # noqa: E402
from eval.audit import load_weights  # noqa: E402
from eval.bpb import build_byte_luts  # noqa: E402
from eval.plain import evaluate  # noqa: E402
from eval.sliding import evaluate_sliding, sliding_plan, warm_up_forward  # noqa: E402
from eval.ttt import TTTConfig, score_first_ttt, warm_up_ttt  # noqa: E402
from bench.train_speed import BenchError, parse_overrides  # noqa: E402


def _setup(a) -> tuple:
    """Everything a bad input can break, checked before the first eval: raises BenchError with one line."""
    if a.artifact and not a.artifact.is_file():
        raise BenchError(f"--artifact {a.artifact} is not an existing file; give final_model.pt or final_model.int8.ptz from a run")
    try:
        strides = [int(s) for s in a.strides.split(",") if s.strip()]
    except ValueError:
        raise BenchError(f"--strides {a.strides!r} must be comma-separated positive integers, e.g. 256,64") from None
    modes = [m.strip() for m in a.ttt.split(",") if m.strip()]
    if any(s <= 0 for s in strides) or a.max_targets < 0 or any(m not in ("full", "lora") for m in modes):
        raise BenchError("--strides must be positive, --max-targets >= 0, and --ttt a list of full, lora")
    env = dict(os.environ, **parse_overrides(a.knobs, Path.cwd()))
    try:
        args = train_gpt.Hyperparameters(env=env)
    except train_gpt.KnobError as e:
        raise BenchError(str(e)) from None
    eval_len = args.eval_seq_len or args.train_seq_len
    if any(s > eval_len for s in strides):
        raise BenchError(f"--strides {a.strides} must be <= the eval window EVAL_SEQ_LEN={eval_len} (a stride of {eval_len} is the plain eval)")
    train_gpt.resolve_data(args, print)
    if not Path(args.tokenizer_path).is_file():
        raise BenchError(f"TOKENIZER_PATH={args.tokenizer_path} is not an existing SentencePiece .model file")
    try:
        val = torch.from_numpy(load_tokens(args.val_files).astype("int64"))
    except (FileNotFoundError, ValueError) as e:
        raise BenchError(f"{e}") from None
    model = train_gpt.build_model(args)
    if a.artifact:
        try:
            state = load_weights(a.artifact)
        except Exception as e:  # a truncated or foreign file: torch, zlib and pickle errors alike
            raise BenchError(f"cannot load --artifact {a.artifact} ({' '.join(str(e).split())[:200]}); "
                             "give a final_model.pt / .ptz / .pgq written by train_gpt.py") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise BenchError(f"--artifact {a.artifact} does not fit the model the knobs describe ({str(e).splitlines()[0][:200]}); "
                             "give the run's model knobs (NUM_LAYERS=..., MODEL_DIM=..., MLP_KIND=...)") from None
    return args, val, model, strides, modes


def main(argv=None) -> int:
    try:
        return _main(argv)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.eval_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", type=Path, help="final_model.pt or final_model.int8.ptz")
    p.add_argument("--random-init", action="store_true", help="untrained weights (speed only)")
    p.add_argument("--strides", default="", help="comma-separated sliding strides (default: EVAL_STRIDE)")
    p.add_argument("--ttt", default="", help="comma-separated TTT modes to run: full, lora")
    p.add_argument("--max-targets", type=int, default=0, help="score only the first N validation targets (0: all)")
    p.add_argument("knobs", nargs="*", metavar="KNOB=VALUE")
    a = p.parse_args(argv)
    if bool(a.artifact) == a.random_init:
        p.error("give exactly one of --artifact PATH or --random-init")
    args, val, model, strides, modes = _setup(a)
    device = torch.device(args.device_type)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.dtype == "bf16" else contextlib.nullcontext
    import sentencepiece as spm

    luts = build_byte_luts(spm.SentencePieceProcessor(model_file=args.tokenizer_path), args.vocab_size, device)
    if a.max_targets:
        val = val[: a.max_targets + 1]
    model = model.to(device).eval()
    # The CPU preset's automatic compile is for training runs; on CPU, evals compile only when COMPILE=1 is asked for.
    compile_eval = args.compile and (device.type == "cuda" or "COMPILE" in args.from_env)
    forward = torch.compile(model, dynamic=False, fullgraph=True) if compile_eval else model
    logits = torch.compile(model.forward_logits, dynamic=False, fullgraph=True) if compile_eval else model.forward_logits
    eval_len = args.eval_seq_len or args.train_seq_len
    batch = args.eval_batch_seqs
    n = val.numel() - 1
    print(f"device:{device} model_params:{sum(p.numel() for p in model.parameters())} targets:{n} seq_len:{eval_len} "
          f"batch_seqs:{batch} threads:{torch.get_num_threads()}")
    print(f"{'eval':<22} {'val_bpb':>10} {'seconds':>9} {'targets/s':>10} {'fwd_tok/s':>10}")

    def row(name: str, bpb: float, secs: float, forwarded: int | None) -> None:
        fwd = f"{forwarded / secs:>10.0f}" if forwarded else f"{'-':>10}"  # TTT also trains: no single figure
        print(f"{name:<22} {bpb:>10.6f} {secs:>9.2f} {n / secs:>10.0f} {fwd}", flush=True)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t

    warm_up_forward(model, args.vocab_size, args.train_seq_len, batch, device, autocast, logits_fn=logits)
    res, secs = timed(lambda: evaluate(model, val, args.train_seq_len, batch, luts, device=device, autocast=autocast, logits_fn=logits))
    row(f"plain L={args.train_seq_len}", res.val_bpb, secs, n)
    strides = strides or [min(args.eval_stride, eval_len) or eval_len]
    warm_up_forward(model, args.vocab_size, eval_len, batch, device, autocast, logits_fn=logits)
    for stride in strides:
        res, secs = timed(lambda: evaluate_sliding(model, val, eval_len, stride, batch, luts, device=device, autocast=autocast,
                                                   logits_fn=logits))
        forwarded = len(sliding_plan(0, n, eval_len, stride)) * eval_len
        row(f"sliding S={stride}", res.val_bpb, secs, forwarded)
    for mode in modes:
        cfg = TTTConfig(mode=mode, chunk_tokens=args.ttt_chunk_tokens, epochs=args.ttt_epochs, lr=args.ttt_lr,
                        lora_rank=args.ttt_lora_rank, seq_len=eval_len, stride=strides[-1], batch_seqs=batch,
                        budget_s=args.eval_budget_seconds)
        warm_up_ttt(model, forward, cfg, args.vocab_size, device, autocast, logits_fn=logits)
        ttt, secs = timed(lambda: score_first_ttt(model, forward, val, cfg, luts, device=device, autocast=autocast, logits_fn=logits))
        row(f"ttt {mode} S={cfg.stride}", ttt.eval.val_bpb, secs, None)
        print(f"  {ttt.summary} lr:{cfg.learning_rate} epochs:{cfg.epochs} chunk:{cfg.chunk_tokens}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
