"""Parameter-golf trainer: the public baseline's conventions, runnable on CPU or CUDA.

    python train_gpt.py                                   # CPU or GPU, offline sample data if DATA_PATH is unset
    torchrun --standalone --nproc_per_node=8 train_gpt.py # the challenge setting
    python train_gpt.py --help                            # every env knob with its default

Reads top to bottom: knobs -> device/torchrun -> data and tokenizer -> model and optimizers ->
warmup -> timed training loop -> int8+zlib export -> roundtrip bits-per-byte.
The heavy parts live in the packages: arch/ (model), optim/ (Muon), data/ (shards), eval/ (bpb), quant/.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import importlib
import io
import math
import os
import platform
import random
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from arch.gpt import CONTROL_TENSOR_NAME_PATTERNS, GPT
from arch.layers import cpu_has_native_bf16, keep_float_names, set_matmul_dtype
from arch.mlp import MLP_REGISTRY, MixerConfig, mixer_modules, mixer_report, parse_layer_spec
from data.checks import DataError, check_data
from data.loader import DistributedTokenLoader
from data.shards import ShardFormatError
from data.writes import WouldOverwrite, atomic_write, claim_log
from eval.bpb import build_byte_luts, byte_rule_note, warn_unknown_targets
from eval.logprob import eval_mode
from eval.plain import evaluate
from eval.sliding import budget_note, evaluate_sliding, warm_up_forward
from optim.groups import EMBED_OPTIMIZERS, build_optimizers, describe_optimizers, set_step_schedule
from optim.health import embedding_health_lines
from quant.export import ExportError, artifact_log_lines, load_artifact, write_artifact
from quant.schemes import DEFAULT_MIX, UNIFORM_SCHEMES, parse_export_specs, parse_mix
from quant.size import code_size, project_sources, source_text


def lazy(module: str, name: str):
    """`module.name`, imported at its first call: parts only some knobs use load only then, so a record ships them
    only for the runs that use them (optional_modules below; records/bundle.py)."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    return call


TTTConfig, score_first_ttt, warm_up_ttt = (lazy("eval.ttt", n) for n in ("TTTConfig", "score_first_ttt", "warm_up_ttt"))
WeightEMA = lazy("optim.ema", "WeightEMA")
attach_qat, set_qat = lazy("quant.qat", "attach_qat"), lazy("quant.qat", "set_qat")
collect_hessians, gptq_targets = lazy("quant.gptq", "collect_hessians"), lazy("quant.gptq", "gptq_targets")
set_zstd_level = lazy("quant.compress", "set_zstd_level")  # zstd specs only: they ship quant.container, which imports it


def optional_modules(args) -> list[str]:
    """The project modules this run's knobs import beyond the eager imports above: with those, what its record ships
    (the code bytes the run logs count exactly these)."""
    mods = mixer_modules(args.mlp_kind)
    for on, names in ((args.ttt_enabled, ["eval.ttt"]), (args.ema_decay > 0, ["optim.ema"]), (args.gptq, ["quant.gptq"]),
                      (bool(args.qat_scheme), ["quant.qat"]), (args.embed_optimizer == "coupled_adam", ["optim.coupled_adam"]),
                      (any(not spec.is_public for spec in args.export_specs), ["quant.container", "quant.quantize"])):
        if on:
            mods += names
    return mods


ROOT = Path(__file__).resolve().parent

# -----------------------------
# HYPERPARAMETERS
# -----------------------------
# Every knob is an environment variable. Names, meanings and CUDA defaults follow the public baseline.
# `cpu` is the default used on a CPU when the variable is not set (a model that trains in ~2 minutes
# on 2 cores); None means the same default as on CUDA.


@dataclass(frozen=True)
class Knob:
    name: str
    type: type
    default: object
    help: str
    cpu: object = None

    @property
    def about(self) -> str:
        """` (help)` for error messages; a packed record's knobs carry no help text (records/compact.py)."""
        return f" ({self.help})" if self.help else ""


CPU_COMPILE_MIN_SECONDS = 60.0  # CPU runs capped at least this long compile (~25 s) and multiply in bf16: it pays back

KNOBS = [
    # Data and run
    Knob("DATA_PATH", str, "./data/datasets/fineweb10B_sp1024", help="folder of fineweb_train_*.bin / fineweb_val_*.bin shards; unset and missing -> offline sample data"),
    Knob("TOKENIZER_PATH", str, "./data/tokenizers/fineweb_1024_bpe.model", help="SentencePiece .model used for bpb byte accounting"),
    Knob("RUN_ID", str, "", help="run name; log goes to logs/<RUN_ID>.txt, artifacts to OUTPUT_DIR (default: a fresh uuid4)"),
    Knob("OUTPUT_DIR", str, "", help="where final_model.pt and final_model.int8.ptz are written (default artifacts/<RUN_ID>)"),
    Knob("SEED", int, 1337, help="seed for torch, numpy and random"),
    # Validation and logging
    Knob("VAL_BATCH_SIZE", int, 524_288, help="validation tokens per forward, over all ranks and accumulation steps", cpu=65_536),
    Knob("VAL_LOSS_EVERY", int, 1000, help="validate every N steps (0: only at the end)", cpu=50),
    Knob("TRAIN_LOG_EVERY", int, 200, help="log train loss every N steps (and on steps <= 10)", cpu=20),
    # Final evaluation of the roundtripped weights (eval/sliding.py, eval/ttt.py); every target is scored once
    Knob("EVAL_SEQ_LEN", int, 0, help="window length of the final sliding and TTT evals (0: TRAIN_SEQ_LEN)"),
    Knob("EVAL_STRIDE", int, 64, help="sliding eval: each window after the first scores its last EVAL_STRIDE targets, the rest is context (0: off; the default is capped at EVAL_SEQ_LEN)"),
    Knob("EVAL_BATCH_SEQS", int, 32, help="windows per forward and rank in the final evals; TTT sequences per step over all ranks", cpu=16),
    Knob("EVAL_BUDGET_SECONDS", float, 600.0, help="eval time allowed on the reference hardware: eval times are logged against it, TTT stops adapting before its pass exceeds it (<= 0: none)"),
    Knob("TTT_ENABLED", bool, False, help="run the score-first test-time-training eval after the sliding eval"),
    Knob("TTT_MODE", str, "full", help="full: SGD+momentum on every weight | lora: Adam on rank-TTT_LORA_RANK adapters of every linear/embedding"),
    Knob("TTT_CHUNK_TOKENS", int, 32_768, help="TTT scores this many targets, then adapts on them", cpu=8192),
    Knob("TTT_EPOCHS", int, 3, help="TTT adaptation passes over each scored chunk"),
    Knob("TTT_LR", float, 0.0, help="TTT learning rate, cosine-decayed over chunks (0: 0.002 for full, 0.01 for lora)"),
    Knob("TTT_LORA_RANK", int, 8, help="rank of the TTT_MODE=lora adapters"),
    # Schedule
    Knob("ITERATIONS", int, 20_000, help="maximum training steps"),
    Knob("WARMDOWN_ITERS", int, 1200, help="LR warmdown length in steps; with a wall-clock cap it is converted to time (steps x avg step time)", cpu=40),
    Knob("WARMUP_STEPS", int, 20, help="steps that prime compilation; model, optimizer and loader are restored afterwards (CPU: 2 when the preset compiles)", cpu=0),
    Knob("TRAIN_BATCH_TOKENS", int, 524_288, help="tokens per optimizer step over all ranks", cpu=8192),
    Knob("TRAIN_SEQ_LEN", int, 1024, help="training and validation sequence length", cpu=256),
    Knob("MAX_WALLCLOCK_SECONDS", float, 600.0, help="training time cap, excluding warmup and validation (<= 0: no cap)", cpu=150.0),
    Knob("GRAD_ACCUM_STEPS", int, 0, help="micro-steps per optimizer step (0: 8 // WORLD_SIZE, as the baseline)"),
    # Model
    Knob("VOCAB_SIZE", int, 1024, help="model vocabulary; must equal the tokenizer's"),
    Knob("NUM_LAYERS", int, 9, help="transformer blocks", cpu=4),
    Knob("MODEL_DIM", int, 512, help="residual width", cpu=128),
    Knob("NUM_HEADS", int, 8, help="attention heads", cpu=4),
    Knob("NUM_KV_HEADS", int, 4, help="key/value heads (GQA)", cpu=2),
    Knob("MLP_MULT", float, 2.0, help="MLP hidden width as a multiple of MODEL_DIM (floats allowed)"),
    Knob("MLP_KIND", str, "relu2", help=f"sublayer in the MLP slot: {', '.join(sorted(MLP_REGISTRY))}"),
    Knob("MLP_KIND_LAYERS", str, "all", help="layers that get MLP_KIND: 'all' or indices/ranges like '0,2,5-8'; the others keep relu2"),
    Knob("HWNODE_STATE_DIM", int, 864, help="hwnode: latent state size n (2dn + n^2 + 1 parameters)", cpu=216),
    Knob("HWNODE_ORDER", int, 2, help="hwnode: Taylor order K of the flow E = exp(dt A / sigma(A))"),
    Knob("HWNODE_VIRTUAL_LAYERS", int, 0, help="hwnode: 0 = V1 block W_out psi(E phi(W_in x)); L >= 1 = V2, one weight set applied L times"),
    Knob("HWNODE_TERM_GATES", bool, False, help="hwnode: learnable gates on the Taylor terms k >= 1"),
    Knob("HWNODE_STATE_BIAS", bool, False, help="hwnode: learnable bias added to the flowed state E z"),
    Knob("WAVE_MODE", str, "modulation", help="wave: interference (Z + Z') or modulation (Z * Z') of the causal prefix-norm waves"),
    Knob("S5_STATE_DIM", int, 256, help="s5, hyena_s5: state size P (P/2 stored complex states with S5_CONJ_SYM=1)"),
    Knob("S5_BLOCKS", int, 16, help="s5, hyena_s5: HiPPO-N blocks on the diagonal (block size S5_STATE_DIM/S5_BLOCKS)"),
    Knob("S5_CONJ_SYM", bool, True, help="s5, hyena_s5: store one state per conjugate pair and output 2 Re"),
    Knob("S5_DT_MIN", float, 1e-3, help="s5, hyena_s5: smallest initial step (log-uniform init of one step per state)"),
    Knob("S5_DT_MAX", float, 1e-1, help="s5, hyena_s5: largest initial step"),
    Knob("S5_CLIP_EIGS", bool, True, help="s5, hyena_s5: clip Re(Lambda) <= -1e-4 in the forward (stable at any length)"),
    Knob("S5_SCAN", str, "auto", help="s5, hyena_s5: auto (triton on CUDA when installed, else fft) | fft | triton"),
    Knob("TIE_EMBEDDINGS", bool, True, help="share the input embedding with the output head"),
    Knob("ROPE_BASE", float, 10000.0, help="RoPE base frequency"),
    Knob("LOGIT_SOFTCAP", float, 30.0, help="logits = cap * tanh(logits / cap); must be > 0"),
    Knob("QK_GAIN_INIT", float, 1.5, help="initial per-head gain on normalized queries"),
    # Optimizers
    Knob("EMBED_LR", float, 0.6, help="Adam LR of an untied input embedding"),
    Knob("HEAD_LR", float, 0.008, help="Adam LR of an untied output head"),
    Knob("TIED_EMBED_LR", float, 0.05, help="Adam LR of the tied embedding"),
    Knob("TIED_EMBED_INIT_STD", float, 0.005, help="init std of the tied embedding"),
    Knob("MATRIX_LR", float, 0.04, help="Muon LR of block matrices"),
    Knob("SCALAR_LR", float, 0.04, help="Adam LR of vectors, scalars and control gains"),
    Knob("MUON_MOMENTUM", float, 0.95, help="Muon momentum after warmup"),
    Knob("MUON_BACKEND_STEPS", int, 5, help="Newton-Schulz iterations per Muon update"),
    Knob("MUON_MOMENTUM_WARMUP_START", float, 0.85, help="Muon momentum at step 0"),
    Knob("MUON_MOMENTUM_WARMUP_STEPS", int, 500, help="steps to warm Muon momentum up linearly", cpu=50),
    Knob("BETA1", float, 0.9, help="Adam beta1"),
    Knob("BETA2", float, 0.95, help="Adam beta2"),
    Knob("ADAM_EPS", float, 1e-8, help="Adam epsilon"),
    Knob("GRAD_CLIP_NORM", float, 0.0, help="clip the global grad norm (0: off; top records: 0.3)"),
    Knob("EMBED_OPTIMIZER", str, "adam", help="optimizer of the vocabulary matrix (tied embedding, else the output head): adam | coupled_adam (second moment shared over the vocabulary, arXiv 2502.08441; run it at a tenth of Adam's LR, e.g. TIED_EMBED_LR=0.005: bench/results/coupled_adam)"),
    Knob("COUPLED_ADAM_SCALE", float, 1.0, help="coupled_adam: multiplies the vocabulary-averaged second moment (the paper's scaled variant 2^-n); the step scales by 1/sqrt"),
    Knob("MUON_WD", float, 0.0, help="decoupled Muon weight decay: matrices *= 1 - lr*wd each step (records: 0.04 to 0.095)"),
    Knob("ADAM_WD", float, 0.0, help="decoupled (AdamW) weight decay of the token embedding and the scalar group (records: 0.04)"),
    Knob("EMA_DECAY", float, 0.0, help="0: off; else export and score a bias-corrected EMA of the weights, updated every step (records: 0.997)"),
    # Device
    Knob("DEVICE", str, "auto", help="auto | cuda | cpu"),
    Knob("COMPILE", bool, True, help=f"torch.compile the model and Newton-Schulz (CPU: on for runs capped at >= {CPU_COMPILE_MIN_SECONDS:g} s, where it pays)", cpu=False),
    Knob("DTYPE", str, "bf16", help="autocast compute dtype: bf16 | fp32 (weights stay fp32)", cpu="fp32"),
    Knob("MATMUL_DTYPE", str, "fp32", help=f"with DTYPE=fp32, the linear layers' products in training (the final scoring is fp32): fp32 | bf16 (bf16 operands, fp32 result and everything else) | auto (bf16 on a CPU with AMX/AVX512-BF16 in runs capped at >= {CPU_COMPILE_MIN_SECONDS:g} s, else fp32)", cpu="auto"),
    # Export, quantization-aware training, GPTQ (quant/)
    Knob("EXPORT_SCHEMES", str, "int8+zlib", help="artifacts to export and roundtrip-score, <scheme>+<compressor> list: schemes int8 int6 int5 int4 mixed, compressors zlib zstd lzma brotli ans (int8+zlib = the public format)"),
    Knob("QUANT_MIX", str, DEFAULT_MIX, help="bits per tensor-name substring for the `mixed` scheme (first match wins, * = rest, 16 = fp16)"),
    Knob("QUANT_CLIP_SEARCH", bool, True, help="per-row clip search (GPTQ-lite) for the non-public schemes"),
    Knob("QUANT_FLOAT_MAX_NUMEL", int, 65_536, help="non-public schemes keep float tensors with at most this many values as fp16", cpu=4096),
    Knob("ZSTD_LEVEL", int, 22, help="zstd compression level (1..22)"),
    Knob("QAT_SCHEME", str, "", help="fake-quantize linear weights to this scheme's precision late in training (empty: QAT off)"),
    Knob("QAT_START_LR_SCALE", float, 0.15, help="QAT turns on once the LR multiplier drops below this (> 1: from step 0)"),
    Knob("GPTQ", bool, False, help="Hessian-aware GPTQ for the non-public schemes, calibrated on training tokens"),
    Knob("GPTQ_RESERVE_SECONDS", float, 10.0, help="with GPTQ and a wall-clock cap: seconds of the cap kept for calibration (training stops earlier)"),
    Knob("GPTQ_CALIB_TOKENS", int, 262_144, help="training tokens used for GPTQ calibration (per rank; stops early at the reserve)", cpu=32_768),
]
KNOB_BY_NAME = {k.name: k for k in KNOBS}


class KnobError(ValueError):
    pass


# Names other tools set that look like knobs; they are never taken for a misspelt knob.
FOREIGN_ENV = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
               "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "MODEL_DIR", "DATA_DIR", "OUTPUT_DIR_ROOT"}
FOREIGN_PREFIXES = ("CUDA", "TORCH", "NCCL", "TRITON", "PYTHON", "OMP_", "MKL_", "KMP_", "HF_", "HUGGINGFACE", "MATCHED_FINEWEB_",
                    "PARAMETER_GOLF_", "ZSTD_CLEVEL", "ZSTD_NBTHREADS", "WANDB_", "SLURM_", "NVIDIA_", "LC_", "XDG_")
# Knob families whose first word nothing else uses: an unknown TTT_*, S5_*, HWNODE_*, QAT_* ... name is a typo.
GENERIC_WORDS = {"DATA", "RUN", "OUTPUT", "MAX", "NUM", "HEAD", "EXPORT", "ZSTD", "MODEL", "GRAD", "TOKENIZER"}
KNOB_PREFIXES = tuple(sorted({k.name.split("_")[0] + "_" for k in KNOBS if "_" in k.name} - {w + "_" for w in GENERIC_WORDS}))


def knob_suggestion(name: str) -> str | None:
    """The knob `name` was probably meant to be, or None when it does not look like one of ours."""
    upper = name.upper().replace("-", "_")
    if upper in KNOB_BY_NAME:
        return upper
    close = difflib.get_close_matches(upper, KNOB_BY_NAME, n=1, cutoff=0.8)
    if close:
        return close[0]
    if upper.startswith(KNOB_PREFIXES):
        close = difflib.get_close_matches(upper, KNOB_BY_NAME, n=1, cutoff=0.5)
        return close[0] if close else " / ".join(k for k in KNOB_BY_NAME if k.startswith(upper.split("_")[0] + "_"))
    return None


def unknown_env_knobs(env) -> list[str]:
    """One problem per environment variable that looks like a knob but is none (a typo would be silently ignored)."""
    problems = []
    for name in sorted(env):
        if name in KNOB_BY_NAME or name in FOREIGN_ENV or name.startswith(FOREIGN_PREFIXES):
            continue
        guess = knob_suggestion(name)
        if guess:
            problems.append(f"{name} is not a knob of train_gpt.py (did you mean {guess}?)")
    return problems


def argv_problem(argv: list[str]) -> str | None:
    """train_gpt.py takes its knobs from the environment only; say how to pass what was typed as an argument."""
    argv = [a for a in argv if not re.fullmatch(r"--local[-_]rank=\d+", a)]  # torch.distributed.launch passes it
    if not argv:
        return None
    first = argv[0]
    key, sep, value = first.lstrip("-").partition("=")
    if not sep and len(argv) > 1 and first.startswith("-"):
        value = argv[1]
    knob = knob_suggestion(key) if key else None
    knob = knob if knob in KNOB_BY_NAME else None
    hint = f"did you mean `{knob}={shlex.quote(value or '...')} python train_gpt.py`?" if knob else "see python train_gpt.py --help"
    return (f"train_gpt.py takes no command-line arguments, got {shlex.join(argv)!r}; every knob is an environment "
            f"variable ({hint})")


# Range of every numeric knob (non-finite floats are refused when parsed): (names, test, rule).
KNOB_RANGES = [
    (("VAL_BATCH_SIZE", "EVAL_BATCH_SEQS", "TTT_CHUNK_TOKENS", "TTT_LORA_RANK", "ITERATIONS", "TRAIN_BATCH_TOKENS",
      "TRAIN_SEQ_LEN", "VOCAB_SIZE", "NUM_LAYERS", "MODEL_DIM", "NUM_HEADS", "NUM_KV_HEADS", "MUON_BACKEND_STEPS",
      "GPTQ_CALIB_TOKENS", "MLP_MULT", "ROPE_BASE", "LOGIT_SOFTCAP", "ADAM_EPS", "COUPLED_ADAM_SCALE"), lambda v: v > 0, "> 0"),
    (("VAL_LOSS_EVERY", "TRAIN_LOG_EVERY", "EVAL_SEQ_LEN", "EVAL_STRIDE", "TTT_EPOCHS", "WARMDOWN_ITERS", "WARMUP_STEPS",
      "GRAD_ACCUM_STEPS", "MUON_MOMENTUM_WARMUP_STEPS", "QUANT_FLOAT_MAX_NUMEL", "TTT_LR", "EMBED_LR", "HEAD_LR",
      "TIED_EMBED_LR", "MATRIX_LR", "SCALAR_LR", "TIED_EMBED_INIT_STD", "GRAD_CLIP_NORM", "MUON_WD", "ADAM_WD",
      "QAT_START_LR_SCALE", "GPTQ_RESERVE_SECONDS"), lambda v: v >= 0, ">= 0"),
    (("MUON_MOMENTUM", "MUON_MOMENTUM_WARMUP_START", "BETA1", "BETA2", "EMA_DECAY"), lambda v: 0 <= v < 1, "in [0, 1)"),
    (("ZSTD_LEVEL",), lambda v: 1 <= v <= 22, "in 1..22"),
    (("SEED",), lambda v: 0 <= v < 2**32, "in [0, 2^32) (numpy's seed range)"),
    (("VOCAB_SIZE",), lambda v: v <= 65_536, "<= 65536 (ids are stored as uint16 in the shards)"),
]
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def parse_knob(knob: Knob, raw: str):
    try:
        if knob.type is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        value = knob.type(raw)
    except ValueError:
        kind = "0 or 1" if knob.type is bool else f"a valid {knob.type.__name__}"
        raise KnobError(f"{knob.name}={raw!r} is not {kind}{knob.about}") from None
    if knob.type is float and not math.isfinite(value):
        raise KnobError(f"{knob.name}={raw!r} is not a finite number{knob.about}")
    if knob.type is str and not value.strip() and knob.default:
        raise KnobError(f"{knob.name} is set but empty; unset it for the default {knob.default!r}{knob.about}")
    return value


class Hyperparameters:
    """All knobs as lowercase attributes. `device_type` picks the preset; default: cuda if available.

    Every knob, every combination and the model they build (on the meta device) is checked here, before the run
    writes anything; environment names that look like a misspelt knob are refused too."""

    def __init__(self, env: dict | None = None, device_type: str | None = None):
        env = os.environ if env is None else env
        problems = unknown_env_knobs(env)
        if problems:
            raise KnobError("; ".join(problems) + " (python train_gpt.py --help lists every knob)")
        device = env.get("DEVICE", "auto")
        if device not in ("auto", "cuda", "cpu"):
            raise KnobError(f"DEVICE={device!r} must be auto, cuda or cpu")
        self.device_type = device_type or ("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
        self.preset = "cuda-baseline" if self.device_type == "cuda" else "cpu-small"
        self.from_env: set[str] = set()
        for knob in KNOBS:
            if knob.name in env:
                value = parse_knob(knob, env[knob.name])
                self.from_env.add(knob.name)
            else:
                value = knob.cpu if (self.device_type == "cpu" and knob.cpu is not None) else knob.default
            setattr(self, knob.name.lower(), value)
        try:
            self.world_size = int(env.get("WORLD_SIZE", "1"))
        except ValueError:
            raise KnobError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} is not an integer (torchrun sets it)") from None
        if self.run_id and not RUN_ID_RE.fullmatch(self.run_id):
            raise KnobError(f"RUN_ID={self.run_id!r} must be a plain name (letters, digits, '_', '-', '.'; no '/'): it "
                            "names logs/<RUN_ID>.txt and artifacts/<RUN_ID>/")
        self._resolve_cpu_speed()
        self.run_id = self.run_id or str(uuid.uuid4())
        self.output_dir = self.output_dir or os.path.join("artifacts", self.run_id)
        self._validate()

    def _resolve_cpu_speed(self) -> None:
        """CPU preset: a run capped at >= CPU_COMPILE_MIN_SECONDS compiles (warmup steps prime it outside the cap) and,
        on a CPU with native bf16 matmul, multiplies in bf16; short runs (tests, smoke runs) stay eager fp32."""
        long_run = self.device_type == "cpu" and self.max_wallclock_seconds >= CPU_COMPILE_MIN_SECONDS
        if long_run and "COMPILE" not in self.from_env:
            self.compile = True
            if "WARMUP_STEPS" not in self.from_env:
                self.warmup_steps = 2
        if self.matmul_dtype == "auto":
            self.matmul_dtype = "bf16" if long_run and cpu_has_native_bf16() else "fp32"

    def _validate(self) -> None:
        for names, ok, rule in KNOB_RANGES:
            for name in names:
                value = getattr(self, name.lower())
                if not ok(value):
                    raise KnobError(f"{name}={value} must be {rule}{KNOB_BY_NAME[name].about}")
        if self.mlp_kind not in MLP_REGISTRY:
            raise KnobError(f"MLP_KIND={self.mlp_kind!r} is not a known mixer; choose one of {sorted(MLP_REGISTRY)}")
        try:
            parse_layer_spec(self.mlp_kind_layers, self.num_layers)
            MixerConfig.from_args(self).validate(self.mlp_kind)
        except ValueError as e:
            raise KnobError(str(e)) from None
        if self.dtype not in ("bf16", "fp32"):
            raise KnobError(f"DTYPE={self.dtype!r} must be bf16 or fp32")
        if self.matmul_dtype not in ("bf16", "fp32"):
            raise KnobError(f"MATMUL_DTYPE={self.matmul_dtype!r} must be fp32, bf16 or auto")
        try:
            self.export_specs, self.mix = parse_export_specs(self.export_schemes), parse_mix(self.quant_mix)
        except ValueError as e:
            raise KnobError(str(e)) from None
        if any(spec.compressor == "zstd" for spec in self.export_specs):
            set_zstd_level(self.zstd_level)
        if self.qat_scheme and self.qat_scheme not in (*UNIFORM_SCHEMES, "mixed"):
            raise KnobError(f"QAT_SCHEME={self.qat_scheme!r} must be empty or one of {[*UNIFORM_SCHEMES, 'mixed']}")
        if self.gptq and 0 < self.max_wallclock_seconds <= self.gptq_reserve_seconds:
            raise KnobError(f"GPTQ_RESERVE_SECONDS={self.gptq_reserve_seconds} leaves no training time under "
                            f"MAX_WALLCLOCK_SECONDS={self.max_wallclock_seconds}")
        if "EVAL_STRIDE" in self.from_env and self.eval_stride > (self.eval_seq_len or self.train_seq_len):
            raise KnobError(f"EVAL_STRIDE={self.eval_stride} must be <= EVAL_SEQ_LEN={self.eval_seq_len or self.train_seq_len} "
                            "(EVAL_STRIDE=EVAL_SEQ_LEN gives the plain eval)")
        if self.ttt_mode not in ("full", "lora"):
            raise KnobError(f"TTT_MODE={self.ttt_mode!r} must be full or lora")
        if self.embed_optimizer not in EMBED_OPTIMIZERS:
            raise KnobError(f"EMBED_OPTIMIZER={self.embed_optimizer!r} must be one of {', '.join(EMBED_OPTIMIZERS)}")
        if self.world_size < 1 or (not self.grad_accum_steps and 8 % self.world_size):
            raise KnobError(f"WORLD_SIZE={self.world_size} must divide 8 (or set GRAD_ACCUM_STEPS explicitly)")
        micro, unit = self.train_batch_tokens // (self.world_size * self.accum_steps), self.world_size * self.accum_steps * self.train_seq_len
        if micro * self.world_size * self.accum_steps != self.train_batch_tokens or micro % self.train_seq_len or not micro:
            raise KnobError(f"TRAIN_BATCH_TOKENS={self.train_batch_tokens} must split into WORLD_SIZE={self.world_size} x "
                            f"GRAD_ACCUM_STEPS={self.accum_steps} micro-batches of whole TRAIN_SEQ_LEN={self.train_seq_len} "
                            f"sequences (e.g. TRAIN_BATCH_TOKENS={max(round(self.train_batch_tokens / unit), 1) * unit})")
        try:  # the model's own checks (heads, head dim, widths of every mixer, QAT's layers), without allocating weights,
            # on two blocks, an MLP_KIND one and a relu2 one: blocks differ only by kind, so any depth is checked at once
            with torch.device("meta"):
                model = build_model(self, num_layers=2, mlp_kind_layers="0")
                if self.qat_scheme:
                    keep = CONTROL_TENSOR_NAME_PATTERNS + tuple(sorted(keep_float_names(model)))
                    attach_qat(model, self.qat_scheme, self.mix, keep, self.quant_float_max_numel)
        except ValueError as e:
            raise KnobError(str(e)) from None
        size = [sum(p.numel() for p in m.parameters()) for m in (model, *model.blocks)]
        kind_layers, skips = len(parse_layer_spec(self.mlp_kind_layers, self.num_layers)), min(self.num_layers // 2, (self.num_layers + 1) // 2)
        self.model_params = (size[0] - size[1] - size[2] - model.skip_weights.numel() + kind_layers * size[1]
                             + (self.num_layers - kind_layers) * size[2] + skips * self.model_dim)

    @property
    def accum_steps(self) -> int:
        """Micro-steps per optimizer step: GRAD_ACCUM_STEPS, or 8 // WORLD_SIZE as the baseline."""
        return self.grad_accum_steps or 8 // self.world_size

    @property
    def train_seconds(self) -> float:
        """The training part of the wall-clock cap: GPTQ calibration's reserve comes out of it."""
        return self.max_wallclock_seconds - (self.gptq_reserve_seconds if self.gptq else 0.0)

    @property
    def train_files(self) -> str:
        return os.path.join(self.data_path, "fineweb_train_*.bin")

    @property
    def val_files(self) -> str:
        return os.path.join(self.data_path, "fineweb_val_*.bin")

    def preset_line(self) -> str:
        chosen = [k for k in KNOBS if k.cpu is not None and k.name not in self.from_env] if self.device_type == "cpu" else []
        detail = " ".join(f"{k.name}={getattr(self, k.name.lower())}" for k in chosen)
        return f"preset:{self.preset}" + (f" (CPU-sized defaults, override any with its env var: {detail})" if detail else "")


def knob_help() -> str:
    lines = [__doc__.strip(), "", "Environment knobs (default on CUDA; [on CPU] where it differs):"]
    for k in KNOBS:
        default = int(k.default) if k.type is bool else k.default
        cpu = f" [cpu: {int(k.cpu) if k.type is bool else k.cpu}]" if k.cpu is not None else ""
        lines.append(f"  {k.name:<28} {k.type.__name__:<5} default {default!s}{cpu}" + (f"\n      {k.help}" if k.help else ""))
    lines.append("Set by torchrun: RANK, WORLD_SIZE, LOCAL_RANK.")
    if not any(k.help for k in KNOBS):
        lines.append("(A packed record ships without the knobs' descriptions: the harness's train_gpt.py --help has them.)")
    return "\n".join(lines)


def build_model(args: Hyperparameters, num_layers: int | None = None, mlp_kind_layers: str | None = None) -> GPT:
    """The GPT described by `args` (fp32 weights, on the CPU); the two overrides serve the meta-device check."""
    return GPT(
        vocab_size=args.vocab_size, num_layers=num_layers or args.num_layers, model_dim=args.model_dim,
        num_heads=args.num_heads, num_kv_heads=args.num_kv_heads, mlp_mult=args.mlp_mult, tie_embeddings=args.tie_embeddings,
        tied_embed_init_std=args.tied_embed_init_std, logit_softcap=args.logit_softcap, rope_base=args.rope_base,
        qk_gain_init=args.qk_gain_init, mlp_kind=args.mlp_kind, mlp_kind_layers=mlp_kind_layers or args.mlp_kind_layers,
        mixer_config=MixerConfig.from_args(args),
    )


def compile_model(args: Hyperparameters, base_model: nn.Module, muon, backend: str = "inductor") -> nn.Module:
    """With COMPILE: torch.compile the model (one graph, static shapes) and Muon's Newton-Schulz; returns what to call.
    (`backend` is for bench.gpu_check's CPU dry run; the trainer always uses inductor.)"""
    if not args.compile:
        return base_model
    muon.orthogonalize = torch.compile(muon.orthogonalize, backend=backend)
    return torch.compile(base_model, dynamic=False, fullgraph=True, backend=backend)


def compile_logits(args: Hyperparameters, base_model: nn.Module):
    """forward_logits, compiled like the model with COMPILE: the scoring passes normalize and pick targets themselves."""
    if not args.compile:
        return base_model.forward_logits
    return torch.compile(base_model.forward_logits, dynamic=False, fullgraph=True)


def lr_multiplier(args: Hyperparameters, step: int, elapsed_ms: float) -> float:
    """Warmdown to 0 over the last WARMDOWN_ITERS steps, measured in wall-clock time when there is a cap."""
    if args.warmdown_iters <= 0:
        return 1.0
    if args.train_seconds <= 0:
        start = max(args.iterations - args.warmdown_iters, 0)
        return max((args.iterations - step) / args.warmdown_iters, 0.0) if step >= start else 1.0
    warmdown_ms = args.warmdown_iters * elapsed_ms / max(step, 1)
    remaining_ms = max(1000.0 * args.train_seconds - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0


def resolve_data(args: Hyperparameters, log) -> None:
    """Use DATA_PATH when it holds shards; with DATA_PATH unset and absent, build/reuse the offline sample."""
    if "DATA_PATH" not in args.from_env and not Path(args.data_path).is_dir():
        from data.sample import ensure_sample_dataset

        sample = ensure_sample_dataset(vocab_size=args.vocab_size)
        args.data_path = str(sample.data_path)
        if "TOKENIZER_PATH" not in args.from_env:
            args.tokenizer_path = str(sample.tokenizer_path)
        log(f"data:sample_dataset path={args.data_path} ({'built now' if sample.built else 'cached'}; "
            "offline sample from Python's documentation; set DATA_PATH for FineWeb)")


def end_of_run_report(logfile: Path, log) -> None:
    """Summary block and logs/<RUN_ID>.png, read back from the log by records/plot.py. records/ is tooling that a packed
    record does not ship, so it is imported only here, and nothing in it can fail a run that has finished."""
    try:
        from records.plot import report_run
    except ImportError:
        log("summary: none here (a packed train_gpt.py ships without records/); python -m records plot LOG draws the curve")
        return
    try:
        report_run(logfile, log)
    except Exception as e:
        log(f"summary: failed ({type(e).__name__}: {e}); the run itself finished")


def state_dict_bytes(state_dict: dict) -> bytes:
    """torch.save into memory: streamed into a file, torch turns a disk error into an anonymous RuntimeError."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


def require_finite(val_bpb: float, what: str) -> None:
    """A NaN or inf score is never a result: stop before an _exact line is logged (records/ would pack it)."""
    if not math.isfinite(val_bpb):
        sys.exit(f"error: {what} scored val_bpb={val_bpb}: the exported weights are broken (non-finite), not a result; "
                 "see the export lines above, lower the learning rates or set GRAD_CLIP_NORM")


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(knob_help())
        return
    problem = argv_problem(sys.argv[1:])
    if problem:
        sys.exit(f"error: {problem}")
    try:
        args = Hyperparameters()
    except KnobError as e:
        sys.exit(f"error: {e}")

    # -----------------------------
    # DEVICE + TORCHRUN SETUP
    # -----------------------------
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", "0"))
    world_size = args.world_size
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    grad_accum_steps = args.accum_steps
    if args.device_type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: DEVICE=cuda but no CUDA device is visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        memory = torch.cuda.get_device_properties(device).total_memory
    else:
        device = torch.device("cpu")
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if 16 * args.model_params > memory:  # fp32 weights, gradients and two optimizer moments, before any activation
        sys.exit(f"error: NUM_LAYERS={args.num_layers} MODEL_DIM={args.model_dim} MLP_MULT={args.mlp_mult} VOCAB_SIZE="
                 f"{args.vocab_size} make a model of {args.model_params:,} parameters, ~{16 * args.model_params / 2**30:.0f} GiB "
                 f"to train, more than the {memory / 2**30:.0f} GiB of {device.type}; make it smaller")
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    master = rank == 0
    amp_dtype = torch.bfloat16 if args.dtype == "bf16" else None
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # -----------------------------
    # LOGGING (the log file is created once every input has been checked; lines until then wait in log_lines)
    # -----------------------------
    logfile = Path("logs") / f"{args.run_id}.txt"
    log_lines: list[str] | None = []

    def log0(msg: str, console: bool = True) -> None:
        if not master:
            return
        if console:
            print(msg, flush=True)
        if log_lines is not None:
            log_lines.append(msg)
            return
        with open(logfile, "a", encoding="utf-8") as f:
            print(msg, file=f)

    def interrupted(signum, frame) -> None:
        wrote = sorted(p.name for p in Path(args.output_dir).glob("final_model*")) if master else []
        print(f"\ntrain_gpt.py: interrupted (Ctrl-C); {logfile} is kept; "
              + (f"{', '.join(wrote)} already written" if wrote else f"no artifact was written, so RUN_ID={args.run_id} can be used again"),
              file=sys.stderr, flush=True)
        raise SystemExit(130)

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job keeps ignoring it
        signal.signal(signal.SIGINT, interrupted)
    log0(args.preset_line())
    log0("knobs_from_env:" + " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in sorted(args.from_env)))  # records/ rebuilds the run command
    resolve_data(args, log0)

    # -----------------------------
    # TOKENIZER + VALIDATION SETUP (every shard's header, the tokenizer, the manifest: before anything is written)
    # -----------------------------
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    try:
        data = check_data(args.data_path, args.tokenizer_path, args.vocab_size,
                          {"TRAIN_SEQ_LEN": args.train_seq_len, "EVAL_SEQ_LEN": args.eval_seq_len})
    except (DataError, ShardFormatError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    sp, train_shards = data.sp, data.train_shards
    claim_error = note = None
    if master:
        try:
            log_lock, note = claim_log(logfile, Path(args.output_dir))  # held open to the end: the RUN_ID is in use
        except (WouldOverwrite, OSError) as e:
            claim_error = f"error: {e}"
    if distributed:  # the other ranks stop with rank 0 instead of waiting for it in the first collective
        failed = torch.tensor(int(claim_error is not None), device=device)
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        claim_error = claim_error or ("" if failed.item() else None)
    if claim_error is not None:
        sys.exit(claim_error or 1)
    if master:
        print(logfile)
        with open(logfile, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in log_lines))
        log_lines = None
        if note:
            log0(f"run_id:{args.run_id} {note}")
    val_tokens = torch.from_numpy(data.val_tokens.astype(np.int64))
    luts = build_byte_luts(sp, args.vocab_size, device)
    log0(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={args.tokenizer_path} tokenizer_sha256:{data.tokenizer_sha256[:16]}")
    if (note := byte_rule_note(sp, luts, val_tokens)) is not None:
        log0(note)  # whitespace pieces: our exact count differs from the public LUT rule
    log0(f"data_check:ok tokenizer matches the shards ({data.verified})" if data.verified else
         "data_check:WARNING the tokenizer could not be checked against the shards (no manifest fingerprint, too few "
         "val documents for the roundtrip probe)")
    log0(f"train_loader:dataset:{Path(args.data_path).resolve().name} train_shards:{len(train_shards)}")
    log0(f"val_loader:shards pattern={args.val_files} tokens:{val_tokens.numel() - 1}")

    # -----------------------------
    # MODEL + OPTIMIZERS
    # -----------------------------
    base_model = build_model(args).to(device)
    set_matmul_dtype(base_model, torch.bfloat16 if args.matmul_dtype == "bf16" else None)  # training; scoring runs fp32
    keep_float = CONTROL_TENSOR_NAME_PATTERNS + tuple(sorted(keep_float_names(base_model)))
    if args.qat_scheme:  # armed before compile; switched on late in training
        n_qat = attach_qat(base_model, args.qat_scheme, args.mix, keep_float, args.quant_float_max_numel)
        log0(f"qat:armed scheme:{args.qat_scheme} layers:{n_qat} start_lr_scale:{args.qat_start_lr_scale}")
    optimizers, muon = build_optimizers(base_model, args)
    compiled_model = compile_model(args, base_model, muon)
    compiled_logits = compile_logits(args, base_model)  # what scoring calls: the evaluator owns the target
    model: nn.Module = (
        DDP(compiled_model, device_ids=[local_rank] if device.type == "cuda" else None, broadcast_buffers=False)
        if distributed else compiled_model
    )

    def validate():
        # The evaluator scores forward_logits itself (full-vocabulary log-softmax, its own target pick) in eval
        # mode; the model's mode is restored afterwards, so training resumes in train mode.
        local_batch_seqs = max(args.val_batch_size // (world_size * grad_accum_steps * args.train_seq_len), 1)
        with eval_mode(base_model):
            res = evaluate(base_model, val_tokens, args.train_seq_len, local_batch_seqs, luts, rank, world_size, device, autocast,
                           logits_fn=compiled_logits)
        if res.targets_scored != res.targets_total:
            raise RuntimeError(f"scoring bug: {res.coverage_line}")
        return res

    log0(f"model_params:{sum(p.numel() for p in base_model.parameters())} mlp_kind:{args.mlp_kind}")
    log0(mixer_report(base_model, args.mlp_kind, base_model.mlp_kind_layers, args.model_dim, args.mlp_mult, MixerConfig.from_args(args)))
    log0(f"world_size:{world_size} grad_accum_steps:{grad_accum_steps} device:{device} "
         f"backend:{dist.get_backend() if distributed else 'none'} compile:{int(args.compile)} dtype:{args.dtype} matmul_dtype:{args.matmul_dtype}")
    log0(f"attention_mode:gqa num_heads:{args.num_heads} num_kv_heads:{args.num_kv_heads}")
    log0(f"tie_embeddings:{args.tie_embeddings} embed_lr:{args.tied_embed_lr if args.tie_embeddings else args.embed_lr} "
         f"head_lr:{0.0 if args.tie_embeddings else args.head_lr} matrix_lr:{args.matrix_lr} scalar_lr:{args.scalar_lr}")
    log0(describe_optimizers(base_model, optimizers) + f" grad_clip_norm:{args.grad_clip_norm} ema_decay:{args.ema_decay}")
    log0(f"train_batch_tokens:{args.train_batch_tokens} train_seq_len:{args.train_seq_len} iterations:{args.iterations} "
         f"warmup_steps:{args.warmup_steps} max_wallclock_seconds:{args.max_wallclock_seconds:.3f}")
    log0(f"seed:{args.seed}")
    # The code that ran goes into the log (file only), like the baseline's snapshot.
    sources = project_sources(ROOT, Path(__file__), optional_modules(args))
    if master:
        log0("code_snapshot:" + ",".join(str(p.relative_to(ROOT)) for p in sources))
        with open(logfile, "a", encoding="utf-8") as f:
            for p in sources:
                f.write(f"# ===== {p.relative_to(ROOT)} =====\n{source_text(p)}\n")
            f.write("=" * 100 + f"\nRunning Python {sys.version}\nRunning PyTorch {torch.__version__}\n{platform.platform()}\n")
            if device.type == "cuda":
                f.write(subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False).stdout)
            f.write("=" * 100 + "\n")

    # -----------------------------
    # DATA LOADER + COMPILE WARMUP
    # -----------------------------
    train_loader = DistributedTokenLoader(args.train_files, rank, world_size, device, args.vocab_size)
    grad_scale = 1.0 / grad_accum_steps

    def zero_grad_all() -> None:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)

    def train_step() -> torch.Tensor:
        """Forward/backward over all micro-batches; returns the mean train loss (not yet stepped)."""
        total = torch.zeros((), device=device)
        for micro in range(grad_accum_steps):
            if distributed:
                model.require_backward_grad_sync = micro == grad_accum_steps - 1
            x, y = train_loader.next_batch(args.train_batch_tokens, args.train_seq_len, grad_accum_steps)
            with autocast():
                loss = model(x, y)
            total += loss.detach()
            (loss * grad_scale).backward()
        return total / grad_accum_steps

    if args.warmup_steps > 0:
        # Prime compiled graphs, then restore the true initial state so warmup does not count as training.
        initial_model = {k: v.detach().cpu().clone() for k, v in base_model.state_dict().items()}
        initial_opts = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
        for i in range(args.warmup_steps):
            zero_grad_all()
            train_step()
            for opt in optimizers:
                opt.step()
            log0(f"warmup_step:{i + 1}/{args.warmup_steps}")
        base_model.load_state_dict(initial_model, strict=True)
        for opt, state in zip(optimizers, initial_opts, strict=True):
            opt.load_state_dict(state)
        zero_grad_all()
        train_loader = DistributedTokenLoader(args.train_files, rank, world_size, device, args.vocab_size)

    # -----------------------------
    # TRAINING LOOP
    # -----------------------------
    ema = WeightEMA(base_model, args.ema_decay) if args.ema_decay > 0 else None  # after the warmup restore: it averages only real steps
    max_ms = 1000.0 * args.train_seconds if args.max_wallclock_seconds > 0 else None
    qat_on = False
    warmdown_step: int | None = None
    training_ms = 0.0
    stop_after: int | None = None
    sync()
    t0 = time.perf_counter()
    step = 0
    while True:
        last_step = step == args.iterations or (stop_after is not None and step >= stop_after)
        if last_step or (args.val_loss_every > 0 and step % args.val_loss_every == 0):
            sync()
            training_ms += 1000.0 * (time.perf_counter() - t0)
            res = validate()
            log0(f"step:{step}/{args.iterations} val_loss:{res.val_loss:.4f} val_bpb:{res.val_bpb:.4f} "
                 f"train_time:{training_ms:.0f}ms step_avg:{training_ms / max(step, 1):.2f}ms")
            if not math.isfinite(res.val_loss):
                sys.exit(f"error: non-finite val_loss at step {step}; lower the learning rates or set GRAD_CLIP_NORM")
            sync()
            t0 = time.perf_counter()
        if last_step:
            if stop_after is not None and step < args.iterations:
                log0(f"stopping_early: wallclock_cap train_time:{training_ms:.0f}ms step:{step}/{args.iterations}")
            break

        elapsed_ms = training_ms + 1000.0 * (time.perf_counter() - t0)
        scale = lr_multiplier(args, step, elapsed_ms)
        if scale < 1.0 and warmdown_step is None:  # the run's curve marks it (records/plot.py)
            warmdown_step = step
            log0(f"warmdown_start step:{step} train_time:{elapsed_ms:.0f}ms lr_scale:{scale:.4f}")
        if args.qat_scheme and not qat_on and scale < args.qat_start_lr_scale:
            set_qat(base_model, True)
            qat_on = True
            log0(f"qat:on step:{step} lr_scale:{scale:.4f}")
        zero_grad_all()
        train_loss = train_step()
        set_step_schedule(optimizers, muon, args, step, scale)
        if args.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(base_model.parameters(), args.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        zero_grad_all()
        if ema is not None:
            ema.update(base_model)

        step += 1
        approx_ms = training_ms + 1000.0 * (time.perf_counter() - t0)
        if args.train_log_every > 0 and (step <= 10 or step % args.train_log_every == 0 or stop_after is not None):
            if distributed:
                dist.all_reduce(train_loss, op=dist.ReduceOp.AVG)  # log the global mean, not rank 0's share
            loss_value = train_loss.item()
            log0(f"step:{step}/{args.iterations} train_loss:{loss_value:.4f} train_time:{approx_ms:.0f}ms "
                 f"step_avg:{approx_ms / step:.2f}ms tok_s:{args.train_batch_tokens * step / (approx_ms / 1000.0):.0f}")
            if not math.isfinite(loss_value):
                sys.exit(f"error: non-finite train_loss at step {step}; lower the learning rates or set GRAD_CLIP_NORM")
        reached_cap = max_ms is not None and approx_ms >= max_ms
        if distributed and max_ms is not None:
            flag = torch.tensor(int(reached_cap), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops on the same step
            reached_cap = bool(flag.item())
        if stop_after is None and reached_cap:
            stop_after = step

    if device.type == "cuda":
        log0(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB "
             f"reserved: {torch.cuda.max_memory_reserved() // 2**20} MiB")

    if ema is not None:  # the EMA weights are what gets exported and scored
        ema.copy_to(base_model)
        res = validate()
        log0(f"diagnostic pre-quantization post-ema val_loss:{res.val_loss:.4f} val_bpb:{res.val_bpb:.4f} ema_updates:{ema.updates}")
    for line in embedding_health_lines(base_model):
        log0(line)

    # -----------------------------
    # GPTQ CALIBRATION (inside the wall-clock cap: training stopped GPTQ_RESERVE_SECONDS early)
    # -----------------------------
    hessians = None
    if args.gptq:
        t_gptq = time.perf_counter()
        calib = (train_loader.next_batch(args.train_batch_tokens, args.train_seq_len, grad_accum_steps) for _ in iter(int, 1))
        targets = gptq_targets(base_model.state_dict(), args.export_specs, args.mix, keep_float, args.quant_float_max_numel)
        hessians, calib_tokens = collect_hessians(base_model, targets, calib, t_gptq + args.gptq_reserve_seconds,
                                                  args.gptq_calib_tokens, autocast)
        for h in hessians.values() if distributed else ():  # every rank calibrated on its own training span
            h_dev = h.to(device)
            dist.all_reduce(h_dev, op=dist.ReduceOp.AVG)
            h.copy_(h_dev.cpu())
        sync()
        gptq_ms = 1000.0 * (time.perf_counter() - t_gptq)
        log0(f"gptq:reserve {args.gptq_reserve_seconds:.1f}s collected {len(hessians)} Hessians from {calib_tokens} "
             f"training tokens in {gptq_ms:.0f}ms; train+calibration:{training_ms + gptq_ms:.0f}ms")
        if max_ms is not None and gptq_ms > 1000.0 * args.gptq_reserve_seconds:
            log0(f"WARNING: GPTQ calibration took {gptq_ms:.0f}ms, more than its {args.gptq_reserve_seconds}s reserve; "
                 "raise GPTQ_RESERVE_SECONDS or lower GPTQ_CALIB_TOKENS")

    # -----------------------------
    # EXPORT + ROUNDTRIP VALIDATION
    # -----------------------------
    if args.qat_scheme:
        set_qat(base_model, False)  # the roundtrip scores the artifact's weights as they are
    set_matmul_dtype(base_model, None)  # and in fp32 products, as any rerun or audit of the artifact does
    out_dir = Path(args.output_dir)
    raw_path = out_dir / "final_model.pt"
    if master:
        atomic_write(raw_path, state_dict_bytes(base_model.state_dict()))  # a full disk leaves no truncated file
        log0(f"Serialized model: {raw_path.stat().st_size} bytes path:{raw_path}")
        code = code_size(ROOT, Path(__file__), optional_modules(args))
        log0(f"Code size: {code.nbytes} bytes ({code.method})")
        for spec in args.export_specs:
            t_export = time.perf_counter()
            art = write_artifact(base_model.state_dict(), spec, out_dir, args.mix, keep_float, args.quant_clip_search,
                                 hessians, args.quant_float_max_numel)
            for line, console in artifact_log_lines(art, code.nbytes, time.perf_counter() - t_export):
                log0(line, console=console)
    if distributed:
        dist.barrier()
    for i, spec in enumerate(args.export_specs):
        base_model.load_state_dict(load_artifact(out_dir / spec.filename), strict=True)
        sync()
        t_eval = time.perf_counter()
        res = validate()
        sync()
        if i == 0:
            warn_unknown_targets(res.unk_targets, res.targets_total, log=log0)
        log0(res.coverage_line)
        log0(f"{spec.metric_name} val_loss:{res.val_loss:.4f} val_bpb:{res.val_bpb:.4f} "
             f"eval_time:{1000.0 * (time.perf_counter() - t_eval):.0f}ms")
        log0(f"{spec.metric_name}_exact val_loss:{res.val_loss:.8f} val_bpb:{res.val_bpb:.8f}")

    # Sliding-window and score-first TTT scores of the roundtripped weights of the first EXPORT_SCHEMES entry
    # (the submission's format); warm-ups use random tokens only.
    if len(args.export_specs) > 1:
        base_model.load_state_dict(load_artifact(out_dir / args.export_specs[0].filename), strict=True)
    eval_len = args.eval_seq_len or args.train_seq_len
    stride = min(args.eval_stride, eval_len)
    base_model.eval()  # every scoring forward runs in eval mode (the evaluators refuse train mode)
    if stride > 0:
        warm_up_forward(base_model, args.vocab_size, eval_len, args.eval_batch_seqs, device, autocast, logits_fn=compiled_logits)
        sync()
        t_eval = time.perf_counter()
        res = evaluate_sliding(base_model, val_tokens, eval_len, stride, args.eval_batch_seqs, luts, rank, world_size, device, autocast,
                               logits_fn=compiled_logits)
        sync()
        secs = time.perf_counter() - t_eval
        if res.targets_scored != res.targets_total:
            raise RuntimeError(f"scoring bug in the sliding eval: {res.coverage_line}")
        log0(res.coverage_line)
        log0(f"final_sliding_window val_loss:{res.val_loss:.4f} val_bpb:{res.val_bpb:.4f} seq_len:{eval_len} stride:{stride} "
             f"eval_time:{1000.0 * secs:.0f}ms eval_tokens_per_s:{res.targets_total / secs:.0f} {budget_note(secs, args.eval_budget_seconds)}")
        require_finite(res.val_bpb, f"the sliding eval of {args.export_specs[0].label}")
        log0(f"final_sliding_window_exact val_loss:{res.val_loss:.8f} val_bpb:{res.val_bpb:.8f}")
    if args.ttt_enabled:
        cfg = TTTConfig(args.ttt_mode, args.ttt_chunk_tokens, args.ttt_epochs, args.ttt_lr, args.ttt_lora_rank, eval_len,
                        stride or eval_len, args.eval_batch_seqs, args.eval_budget_seconds)
        warm_up_ttt(base_model, compiled_model, cfg, args.vocab_size, device, autocast, rank, world_size, logits_fn=compiled_logits)
        sync()
        ttt = score_first_ttt(base_model, compiled_model, val_tokens, cfg, luts, rank, world_size, device, autocast,
                              logits_fn=compiled_logits)
        if ttt.eval.targets_scored != ttt.eval.targets_total:
            raise RuntimeError(f"scoring bug in the TTT eval: {ttt.eval.coverage_line}")
        log0(ttt.eval.coverage_line)
        log0(f"final_ttt val_loss:{ttt.eval.val_loss:.4f} val_bpb:{ttt.eval.val_bpb:.4f} mode:{cfg.mode} {ttt.summary} "
             f"eval_tokens_per_s:{ttt.eval.targets_total / ttt.seconds:.0f} {budget_note(ttt.seconds, args.eval_budget_seconds)}")
        require_finite(ttt.eval.val_bpb, f"the TTT eval of {args.export_specs[0].label}")
        log0(f"final_ttt_exact val_loss:{ttt.eval.val_loss:.8f} val_bpb:{ttt.eval.val_bpb:.8f}")
    if master:
        end_of_run_report(logfile, log0)
    if distributed:  # the DDP wrapper holds the process group: dropped after a barrier, before the group is destroyed,
        dist.barrier()  # so gloo's threads are idle and joined here, not at frame teardown under the GIL (a hang)
        del model
        dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except (ShardFormatError, ExportError) as e:  # a train shard refused as it is loaded, an artifact that would not hold
        sys.exit(f"error: {e}")
    except OSError as e:  # a full disk while logging or exporting; every artifact is written atomically
        sys.exit(f"error: {e}; nothing half-written was left behind: free space (or fix the permissions) and rerun")
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not isinstance(e, torch.OutOfMemoryError) and "can't allocate memory" not in str(e):
            raise  # a bug, not a bad input: keep its traceback
        sys.exit(f"error: out of memory ({str(e).splitlines()[0][-160:]}); lower TRAIN_BATCH_TOKENS (or raise "
                 "GRAD_ACCUM_STEPS), VAL_BATCH_SIZE / EVAL_BATCH_SEQS, or the model size")
