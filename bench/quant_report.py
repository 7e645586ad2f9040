"""Compare export formats on one trained model: bytes, roundtrip bpb, compressed/entropy bound.

    python -m bench.quant_report --model artifacts/RUN/final_model.pt \
        --schemes int8+zlib,int6+zstd,int6+ans,mixed+ans [--gptq] [--out /tmp/qr]

Model shape, data and quant knobs come from the same env knobs as the run (train_gpt.Hyperparameters), so
run it with the env of the training run. With --gptq each non-public scheme is also exported with GPTQ,
calibrated on GPTQ_CALIB_TOKENS training tokens (never validation tokens).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import train_gpt
from arch.gpt import CONTROL_TENSOR_NAME_PATTERNS
from arch.layers import keep_float_names
from data.loader import DistributedTokenLoader
from data.shards import load_tokens
from eval.bpb import build_byte_luts
from eval.plain import evaluate
from quant.export import load_artifact, write_artifact
from quant.gptq import collect_hessians, gptq_targets
from quant.schemes import parse_export_specs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="final_model.pt of a run")
    ap.add_argument("--schemes", default="int8+zlib,int6+zstd,int6+brotli,int6+ans,int5+ans,mixed+ans")
    ap.add_argument("--gptq", action="store_true", help="also export every non-public scheme with GPTQ")
    ap.add_argument("--out", default="", help="folder for the artifacts (default: a temp folder)")
    cli = ap.parse_args()
    args = train_gpt.Hyperparameters(device_type="cpu")
    train_gpt.resolve_data(args, print)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=args.tokenizer_path)
    luts = build_byte_luts(sp, args.vocab_size, torch.device("cpu"))
    val = torch.from_numpy(load_tokens(args.val_files).astype("int64"))
    model = train_gpt.build_model(args)
    state = torch.load(cli.model, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    keep = CONTROL_TENSOR_NAME_PATTERNS + tuple(sorted(keep_float_names(model)))
    specs = parse_export_specs(cli.schemes)
    out = Path(cli.out or tempfile.mkdtemp(prefix="quant_report_"))
    out.mkdir(parents=True, exist_ok=True)

    def bpb() -> float:
        model.eval()
        res = evaluate(model, val, args.train_seq_len, 16, luts)
        return res.val_bpb

    rows = [("float (no export)", 0, bpb(), float("nan"), 0.0)]
    hessians = None
    if cli.gptq:
        loader = DistributedTokenLoader(args.train_files, 0, 1, torch.device("cpu"))
        batches = (loader.next_batch(args.train_seq_len * 16, args.train_seq_len, 1) for _ in iter(int, 1))
        t = time.perf_counter()
        hessians, n = collect_hessians(model, gptq_targets(state, specs, args.mix, keep, args.quant_float_max_numel),
                                       batches, t + 600.0, args.gptq_calib_tokens)
        print(f"gptq: {len(hessians)} Hessians from {n} training tokens in {time.perf_counter() - t:.1f}s")
    variants = [(s, None) for s in specs] + ([(s, hessians) for s in specs if not s.is_public] if cli.gptq else [])
    for spec, hess in variants:
        sub = out / ("gptq" if hess else "plain")
        sub.mkdir(exist_ok=True)
        t = time.perf_counter()
        art = write_artifact(state, spec, sub, args.mix, keep, args.quant_clip_search, hess, args.quant_float_max_numel)
        secs = time.perf_counter() - t
        model.load_state_dict(load_artifact(art.path), strict=True)
        rows.append((spec.label + (" gptq" if hess else ""), art.nbytes, bpb(), art.nbytes / art.entropy.bound_bytes, secs))
    print(f"{'format':<22} {'bytes':>10} {'val_bpb':>10} {'compr/bound':>12} {'export_s':>9}")
    for label, nbytes, score, ratio, secs in rows:
        print(f"{label:<22} {nbytes:>10} {score:>10.5f} {ratio:>12.4f} {secs:>9.1f}")


if __name__ == "__main__":
    main()
