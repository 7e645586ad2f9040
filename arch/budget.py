"""Byte-budget sizing: which model shapes fit a submission cap (MIXERS.md section 5).

    python -m arch.budget --bytes 16000000 --scheme int8+zlib --vocab 1024 --mlp-kind relu2,swiglu
    python -m arch.budget --calibrate 'sweep-out/runs/*' --scheme int8+zlib     # refit bytes/param

Two models, kept apart on purpose:
- parameters: exact closed forms, the GPT skeleton here and each mixer's own `mixer_param_count`
  (arch/mlp.py); tests hold both to the built models for every registered kind;
- bytes: the state-dict inventory of a shape (names and shapes, no weights) is priced tensor by tensor
  with the export scheme's own storage rules (quantized symbols, scales, fp16/fp32 passthrough), then
  mapped to compressed bytes by coefficients fitted on REAL exported artifacts of trained checkpoints
  (budget_calibration.json, with its leave-one-out error, which the listing uses as a safety margin).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import glob
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from arch.gpt import CONTROL_TENSOR_NAME_PATTERNS, GPT
from arch.layers import keep_float_names
from arch.mlp import MLP_REGISTRY, MixerConfig, mixer_param_count
from data.writes import atomic_write

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_PATH = Path(__file__).with_name("budget_calibration.json")
ANCHORS_PATH = Path(__file__).with_name("budget_anchors.json")
FEATURES = ("symbol_bytes", "float_bytes", "tensors")  # what one coefficient each prices, see storage_features
UNCALIBRATED_TENSOR_BYTES = 400.0  # torch.save/container bookkeeping per tensor, measured uncompressed (<= ~350)
# "Expansion" e is the sublayer's hidden width over d. MLP_MULT carries it for every kind; kinds whose width
# is another knob get it here as well. Kinds whose size does not depend on e are de-duplicated over e.
EXPANSION_WIDTH_FIELDS: dict[str, Callable[[float, int], dict]] = {
    "hwnode": lambda e, d: {"hwnode_state_dim": max(16, int(round(e * d / 16)) * 16)},
}


# ---------- shapes and exact parameter counts ----------

@dataclass(frozen=True)
class Shape:
    """One model shape; `env()` gives the train_gpt.py knobs that build exactly this model."""

    vocab: int
    layers: int
    dim: int
    heads: int
    kv_heads: int
    mlp_kind: str = "relu2"
    mlp_mult: float = 2.0
    tie: bool = True
    mixer: MixerConfig = field(default_factory=MixerConfig)

    def __post_init__(self):
        if self.mlp_kind not in MLP_REGISTRY:
            raise ValueError(f"mlp kind {self.mlp_kind!r} is not registered; choose one of {sorted(MLP_REGISTRY)}")
        if min(self.vocab, self.layers, self.dim, self.heads, self.kv_heads) <= 0:
            raise ValueError(f"every size must be positive: {self}")
        if self.dim % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"MODEL_DIM={self.dim} must be divisible by NUM_HEADS={self.heads}, "
                             f"and NUM_HEADS by NUM_KV_HEADS={self.kv_heads}")

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.dim // self.heads)

    def env(self) -> dict[str, str]:
        env = {"VOCAB_SIZE": self.vocab, "NUM_LAYERS": self.layers, "MODEL_DIM": self.dim, "NUM_HEADS": self.heads,
               "NUM_KV_HEADS": self.kv_heads, "MLP_KIND": self.mlp_kind, "MLP_MULT": self.mlp_mult,
               "TIE_EMBEDDINGS": int(self.tie), "MLP_KIND_LAYERS": "all"}
        default = MixerConfig()
        for f in dataclasses.fields(MixerConfig):  # knob name = field name upper-cased (MixerConfig.from_args)
            value = getattr(self.mixer, f.name)
            if value != getattr(default, f.name):
                env[f.name.upper()] = int(value) if isinstance(value, bool) else value
        return {k: str(v) for k, v in env.items()}

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "mixer": dataclasses.asdict(self.mixer)}

    @classmethod
    def from_json(cls, obj: dict) -> "Shape":
        return cls(**{**obj, "mixer": MixerConfig(**obj.get("mixer", {}))})


def with_expansion(kind: str, e: float, dim: int, mixer: MixerConfig) -> tuple[float, MixerConfig]:
    """(mlp_mult, mixer config) that give `kind` the expansion e at width `dim`."""
    extra = EXPANSION_WIDTH_FIELDS.get(kind, lambda e, d: {})(e, dim)
    return e, dataclasses.replace(mixer, **extra)


def embedding_params(s: Shape) -> int:
    return s.vocab * s.dim * (1 if s.tie else 2)


def block_params(s: Shape) -> int:
    """One block: Q and O (d x d), K and V (kv_dim x d), per-head q_gain, attn/mlp scales and the 2 x d resid_mix,
    plus the MLP-slot sublayer by its own formula. RMSNorm and RoPE have no parameters."""
    attn = 2 * s.dim * s.dim + 2 * s.dim * s.kv_dim + s.heads
    return attn + 4 * s.dim + mixer_param_count(s.mlp_kind, s.dim, s.mlp_mult, s.mixer)


def param_count(s: Shape) -> int:
    """Exact parameter count of GPT(shape) (MIXERS.md 5.1 extended by the baseline's gains and U-Net skips)."""
    skips = min(s.layers // 2, s.layers - s.layers // 2) * s.dim
    return embedding_params(s) + s.layers * block_params(s) + skips


def embedding_share(s: Shape) -> float:
    return embedding_params(s) / param_count(s)


def build_meta_model(s: Shape, device: str = "meta") -> GPT:
    """The model itself; on the meta device it has every name, shape and flag but no storage."""
    with torch.device(device):
        return GPT(vocab_size=s.vocab, num_layers=s.layers, model_dim=s.dim, num_heads=s.heads, num_kv_heads=s.kv_heads,
                   mlp_mult=s.mlp_mult, tie_embeddings=s.tie, tied_embed_init_std=0.005, logit_softcap=30.0,
                   rope_base=10000.0, qk_gain_init=1.5, mlp_kind=s.mlp_kind, mixer_config=s.mixer)


def export_keep_float(model: torch.nn.Module) -> tuple[str, ...]:
    """The names the trainer keeps in float when exporting (control gains plus what modules declare)."""
    return CONTROL_TENSOR_NAME_PATTERNS + tuple(sorted(keep_float_names(model)))


@functools.lru_cache(maxsize=1024)
def _one_block_model(s1: Shape) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    model = build_meta_model(s1)
    return model.state_dict(), export_keep_float(model)


def _split_block0(s: Shape) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str], list[str]]:
    """(non-block tensors, block-0 tensors renamed to their suffix, non-block keep names, block keep suffixes)."""
    sd1, keep1 = _one_block_model(dataclasses.replace(s, layers=1))
    prefix = "blocks.0."
    rest = {n: t for n, t in sd1.items() if not n.startswith(prefix) and n != "skip_weights"}
    block = {n[len(prefix):]: t for n, t in sd1.items() if n.startswith(prefix)}
    return rest, block, [k for k in keep1 if not k.startswith(prefix)], [k[len(prefix):] for k in keep1 if k.startswith(prefix)]


def _skip_weights(s: Shape) -> Tensor:
    return torch.empty(min(s.layers // 2, s.layers - s.layers // 2), s.dim, device="meta")


def inventory(s: Shape) -> tuple[dict[str, Tensor], tuple[str, ...]]:
    """(state dict of meta tensors, keep-float names) of shape `s`. The L blocks are identical, so one block is
    built on the meta device and repeated; tests check this equals the full model's state dict."""
    rest, block, keep_rest, keep_block = _split_block0(s)
    tensors = dict(rest)
    for i in range(s.layers):
        tensors.update({f"blocks.{i}.{n}": t for n, t in block.items()})
    tensors["skip_weights"] = _skip_weights(s)
    return tensors, tuple(keep_rest + [f"blocks.{i}.{k}" for i in range(s.layers) for k in keep_block])


# ---------- export schemes: how each tensor is stored, and the real exporter ----------

@dataclass(frozen=True)
class Scheme:
    """`plan(name, tensor, keep_float) -> (kind, bits)` with kind raw | f32 | f16 | row | tensor (the storage
    classes of quant/), and `export(state_dict, keep_float) -> bytes`, the artifact the trainer writes."""

    label: str
    plan: Callable[[str, Tensor, tuple[str, ...]], tuple[str, int]]
    export: Callable[[dict[str, Tensor], tuple[str, ...]], bytes]


def _int8_zlib() -> Scheme:
    from quant.int8 import KEEP_FLOAT_MAX_NUMEL, pack_int8_zlib

    def plan(name: str, t: Tensor, keep: tuple[str, ...]) -> tuple[str, int]:
        # quant.int8.quantize_state_dict: small or kept tensors pass through (fp32 if kept, else fp16)
        if not t.is_floating_point():
            return "raw", 0
        if t.numel() <= KEEP_FLOAT_MAX_NUMEL or any(p in name for p in keep):
            return ("f32", 32) if any(p in name for p in keep) else ("f16", 16)
        return ("row" if t.ndim == 2 else "tensor"), 8

    return Scheme("int8+zlib", plan, lambda sd, keep: pack_int8_zlib(sd, keep_fp32=keep))


def _container_scheme(label: str, float_max_numel: int) -> Scheme:
    """The non-public `<scheme>+<compressor>` specs of quant/ (EXPORT_SCHEMES), with their default QUANT_MIX."""
    try:
        from quant.container import serialize
        from quant.quantize import quantize_model
        from quant.plan import tensor_plan
        from quant.schemes import DEFAULT_MIX, parse_export_specs, parse_mix
    except ImportError:
        raise ValueError(f"scheme {label!r} needs quant/'s export schemes (quant.schemes, quant.quantize), which this "
                         "checkout does not have; only int8+zlib is available") from None
    (spec,) = parse_export_specs(label)
    mix = parse_mix(DEFAULT_MIX)

    def plan(name: str, t: Tensor, keep: tuple[str, ...]) -> tuple[str, int]:
        return tensor_plan(name, t, spec.scheme, mix, keep, float_max_numel)

    def export(sd: dict[str, Tensor], keep: tuple[str, ...]) -> bytes:
        return serialize(quantize_model(sd, spec.scheme, mix, keep, small_numel=float_max_numel), spec.compressor)

    return Scheme(label, plan, export)


def get_scheme(label: str, float_max_numel: int = 65_536) -> Scheme:
    return _int8_zlib() if label == "int8+zlib" else _container_scheme(label, float_max_numel)


def storage_features(tensors: dict[str, Tensor], keep: tuple[str, ...], scheme: Scheme) -> np.ndarray:
    """[bytes of quantized symbols at their bit width, bytes stored as floats (fp16/fp32 tensors and the
    per-row fp16 / per-tensor fp32 scales), number of tensors] before compression."""
    symbols = floats = 0.0
    for name, t in tensors.items():
        kind, bits = scheme.plan(name, t, keep)
        if kind in ("row", "tensor"):
            symbols += t.numel() * bits / 8
            floats += 2 * t.shape[0] if kind == "row" else 4
        elif kind in ("f16", "f32"):
            floats += t.numel() * bits / 8
        else:
            floats += t.numel() * t.element_size()
    return np.array([symbols, floats, len(tensors)], dtype=np.float64)


# ---------- calibration: compressed bytes from real exported artifacts ----------

@dataclass(frozen=True)
class Calibration:
    scheme: str
    coef: tuple[float, ...]  # bytes per unit of each FEATURES entry after compression
    rel_error: float  # stated error: the largest leave-one-out |predicted - real| / real over the points
    points: int
    note: str = ""
    regime: str = ""  # which calibration-file entry this is (trained, cpu-short, ...)

    def predict(self, features: np.ndarray) -> float:
        return float(np.dot(self.coef, features))


def fit_calibration(scheme: str, features: np.ndarray, nbytes: np.ndarray, note: str = "") -> Calibration:
    """Non-negative least squares in relative terms (every artifact weighs the same whatever its size);
    the stated error is the worst leave-one-out relative error, so it is an out-of-sample figure."""
    from scipy.optimize import nnls

    if len(nbytes) < len(FEATURES) + 1:
        raise ValueError(f"calibration needs at least {len(FEATURES) + 1} artifacts, got {len(nbytes)}; "
                         "add more trained checkpoints of different shapes")

    def solve(idx):
        coef, _ = nnls(features[idx] / nbytes[idx, None], np.ones(len(idx)))
        return coef

    everyone = np.arange(len(nbytes))
    loo = [abs(features[i] @ solve(everyone[everyone != i]) / nbytes[i] - 1) for i in everyone]
    return Calibration(scheme, tuple(float(c) for c in solve(everyone)), float(max(loo)), len(nbytes), note)


def calibration_key(scheme: str, regime: str) -> str:
    return f"{scheme}@{regime}"


def read_calibration_table(path: Path) -> dict:
    """The calibration table in `path` ({} when absent); ValueError naming the file when it is anything else."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--calibration {path} is not a readable calibration JSON ({e}); point --calibration at "
                         "arch/budget_calibration.json or a new file") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) and "coef" in v for v in table.values()):
        raise ValueError(f"--calibration {path} is not a calibration table (scheme@regime -> coef, rel_error, points); "
                         "point --calibration at arch/budget_calibration.json or a new file")
    return table


def load_calibration(scheme: str, path: Path = CALIBRATION_PATH, regime: str = "trained") -> Calibration:
    table = read_calibration_table(path)
    key = calibration_key(scheme, regime)
    others = sorted(k for k in table if k.startswith(f"{scheme}@"))
    if key not in table and others:
        print(f"warning: no bytes calibration {key!r} in {path}; using {others[0]!r} instead (see its note)",
              file=sys.stderr)
        key = others[0]
    if key not in table:
        print(f"warning: no bytes calibration for {scheme!r} in {path}; using the UNCOMPRESSED size (an upper bound). "
              f"Fit one with: python -m arch.budget --calibrate 'SWEEP_OUT/runs/*' --scheme {scheme} --regime {regime}",
              file=sys.stderr)
        return uncalibrated(scheme)
    entry = table[key]
    try:
        return Calibration(scheme, tuple(float(c) for c in entry["coef"]), float(entry["rel_error"]), int(entry["points"]),
                           entry.get("note", ""), key.partition("@")[2])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"--calibration {path}: entry {key!r} lacks numeric coef / rel_error / points") from None


def uncalibrated(scheme: str) -> Calibration:
    """Bytes before compression plus a container allowance per tensor: what to size with before any fit."""
    return Calibration(scheme, (1.0, 1.0, UNCALIBRATED_TENSOR_BYTES), 0.0, 0, "uncalibrated: uncompressed size")


def save_calibration(cal: Calibration, path: Path = CALIBRATION_PATH, regime: str = "trained") -> None:
    """Add or replace one entry; a file that is not a calibration table is refused, never overwritten."""
    table = read_calibration_table(path)
    table[calibration_key(cal.scheme, regime)] = {"coef": list(cal.coef), "features": list(FEATURES),
                                                  "rel_error": cal.rel_error, "points": cal.points, "note": cal.note}
    atomic_write(path, json.dumps(table, indent=1, sort_keys=True) + "\n")


def fit_from_anchors(scheme: Scheme, anchors: list[dict], base: Calibration) -> Calibration:
    """Published artifacts of long-trained models (shape + real bytes, no checkpoint): they fix the one coefficient
    that depends on how far training has moved the weights, bytes per quantized symbol; the float and per-tensor
    coefficients come from `base` (a checkpoint fit). The stated error is the largest anchor deviation."""
    feats = np.array([model_features(Shape.from_json(a["shape"]), scheme) for a in anchors])
    real = np.array([a["model_bytes"] for a in anchors], dtype=np.float64)
    rest = feats[:, 1:] @ np.array(base.coef[1:])
    x, y = feats[:, 0] / real, 1 - rest / real  # relative least squares for the symbol coefficient alone
    sym = float(x @ y / (x @ x))
    coef = (sym, *base.coef[1:])
    err = float(max(abs(f @ np.array(coef) / n - 1) for f, n in zip(feats, real)))
    steps = sorted(a.get("steps", 0) for a in anchors)
    note = (f"bytes/symbol from {len(anchors)} published artifacts ({steps[0]}..{steps[-1]} training steps; "
            f"{'; '.join(sorted({a['source'] for a in anchors}))}); float and per-tensor terms from: {base.note}")
    return Calibration(scheme.label, coef, err, len(anchors), note)


def checkpoint_of(run_dir: Path) -> tuple[Shape, Path]:
    """A sweep run folder: shape.json (what it trained) and the trainer's raw final_model.pt."""
    shape_file = run_dir / "shape.json"
    found = sorted(run_dir.glob("artifacts/*/final_model.pt"))
    logs = "".join(p.read_text(errors="replace") for p in run_dir.glob("logs/*.txt"))
    if not shape_file.is_file() or not found or "Serialized model: " not in logs:  # logged once the save completed
        raise ValueError(f"{run_dir} is not a trained sweep run (needs shape.json, artifacts/*/final_model.pt and "
                         "the trainer's `Serialized model:` log line)")
    return Shape.from_json(json.loads(shape_file.read_text())), found[0]


def _is_trained_run(run_dir: Path) -> bool:
    try:
        checkpoint_of(run_dir)
        return True
    except ValueError:
        return False


def measure_runs(run_dirs: list[Path], scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """(features, real artifact bytes) of trained checkpoints, each exported again with `scheme`."""
    feats, sizes = [], []
    for run_dir in run_dirs:
        shape, ckpt = checkpoint_of(run_dir)
        try:
            sd = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a truncated or foreign file
            raise ValueError(f"{ckpt} is not a readable checkpoint ({str(e).splitlines()[0][:120]}); remove that run folder "
                             "from the --calibrate globs") from None
        meta, keep = inventory(shape)
        if {k: tuple(v.shape) for k, v in sd.items()} != {k: tuple(v.shape) for k, v in meta.items()}:
            raise ValueError(f"{ckpt} does not hold the model its shape.json describes; was the run edited?")
        feats.append(storage_features(sd, keep, scheme))
        sizes.append(len(scheme.export(sd, keep)))
    return np.array(feats), np.array(sizes, dtype=np.float64)


# ---------- prediction and search ----------

# Run in a fresh interpreter: import what the entry imports at module level (never run it), then ask the trainer's
# own measure. In this process arch.budget / sweep are loaded too and would be counted as shipped code.
_MEASURE_CODE = """
import importlib, sys
from pathlib import Path
from records.bundle import imported_names
entry = Path(sys.argv[1]).resolve()
for imp in imported_names(entry.read_text(encoding="utf-8"), "__main__", False, skip_main_guard=True):
    if not imp.lazy:
        try:
            importlib.import_module(imp.name)
        except ModuleNotFoundError:
            if not imp.from_item:  # `from a import b`: b may be a name, not a module
                raise
from quant.size import code_size
print(code_size(entry.parent, entry).nbytes)
"""


@functools.lru_cache(maxsize=None)
def default_code_bytes(entry: Path = ROOT / "train_gpt.py") -> int:
    """Code bytes a record of `entry` would count: quant.size.code_size, the measure the trainer's `Code size:` line
    logs (the packed one-file train_gpt.py that `records pack` writes), not the raw size of the sources."""
    entry = Path(entry).resolve()
    path = os.pathsep.join(dict.fromkeys([str(entry.parent), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _MEASURE_CODE, str(entry)], cwd=entry.parent, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=path.rstrip(os.pathsep)), timeout=300)
    if proc.returncode != 0 or not proc.stdout.strip().isdigit():
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"cannot measure the code bytes of {entry} ({why}); pass --code-bytes N")
    return int(proc.stdout.strip())


@dataclass(frozen=True)
class Prediction:
    shape: Shape
    params: int
    share: float
    model_bytes: int
    total_bytes: int  # model + code
    rel_error: float

    @property
    def total_high(self) -> int:  # the total if the calibration errs by its stated error
        return int(math.ceil(self.model_bytes * (1 + self.rel_error))) + self.total_bytes - self.model_bytes


def model_features(s: Shape, scheme: Scheme) -> np.ndarray:
    """storage_features(*inventory(s), scheme) without materialising L blocks: every block is priced the same."""
    rest, block, keep_rest, keep_block = _split_block0(s)
    keep0 = tuple(keep_rest + [f"blocks.0.{k}" for k in keep_block])
    block_f = storage_features({f"blocks.0.{n}": t for n, t in block.items()}, keep0, scheme)
    rest_f = storage_features({**rest, "skip_weights": _skip_weights(s)}, keep0, scheme)
    return rest_f + s.layers * block_f


def predict(s: Shape, scheme: Scheme, cal: Calibration, code_bytes: int) -> Prediction:
    model_bytes = int(round(cal.predict(model_features(s, scheme))))
    return Prediction(s, param_count(s), embedding_share(s), model_bytes, model_bytes + code_bytes, cal.rel_error)


def largest_fitting(base: Shape, budget: int, scheme: Scheme, cal: Calibration, code_bytes: int,
                    layers: range) -> Prediction | None:
    """The deepest `base` (other sizes fixed) whose total, plus the calibration's stated error, fits `budget`."""
    best = None
    for n in layers:  # bytes grow with depth, so stop at the first miss
        p = predict(dataclasses.replace(base, layers=n), scheme, cal, code_bytes)
        if p.total_high > budget:
            break
        best = p
    return best


def candidate_shapes(budget: int, scheme: Scheme, cal: Calibration, code_bytes: int, vocab: int, kinds: list[str],
                     expansions: list[float], dims: list[int], head_dim: int, kv_ratio: int, layers: range,
                     tie: bool = True, mixer: MixerConfig | None = None) -> list[Prediction]:
    """For every kind x expansion x width: the deepest shape that fits, as a list sorted by kind, e, d."""
    out = []
    for kind in kinds:
        seen_sizes = set()
        for e in expansions:
            for d in dims:
                if d % head_dim or (d // head_dim) % kv_ratio:
                    continue
                mult, cfg = with_expansion(kind, e, d, mixer or MixerConfig())
                base = Shape(vocab, layers.start, d, d // head_dim, d // head_dim // kv_ratio, kind, mult, tie, cfg)
                key = (d, mixer_param_count(kind, d, mult, cfg))
                if key in seen_sizes:  # e does not change this kind's size: one row is enough
                    continue
                seen_sizes.add(key)
                p = largest_fitting(base, budget, scheme, cal, code_bytes, layers)
                if p is not None:
                    out.append(p)
    return out


def solve_for_share(kind: str, e: float, share: float, budget: int, scheme: Scheme, cal: Calibration,
                    code_bytes: int, vocab: int, dims: list[int], head_dim: int, kv_ratio: int, layers: range,
                    tie: bool = True, mixer: MixerConfig | None = None, min_fill: float = 0.8) -> Prediction:
    """The fitting shape of this kind and expansion whose embedding share is closest to `share` (MIXERS.md 5.2:
    d from the share, L from the rest), among those that use at least `min_fill` of the budget."""
    fits = [p for p in candidate_shapes(budget, scheme, cal, code_bytes, vocab, [kind], [e], dims, head_dim, kv_ratio,
                                        layers, tie, mixer) if p.total_high >= min_fill * budget]
    if not fits:
        raise ValueError(f"no {kind} shape with expansion {e} fills {min_fill:.0%} of {budget} bytes with widths "
                         f"{dims[0]}..{dims[-1]} and {layers.start}..{layers.stop - 1} layers; widen --dims/--layers")
    return min(fits, key=lambda p: (abs(p.share - share), -p.total_bytes))


# ---------- CLI ----------

def parse_range(text: str) -> range:
    lo, _, hi = text.partition(":")
    try:
        r = range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be N or LO:HI") from None
    if not r or r.start < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a non-empty range of positive integers")
    return r


def _number_list(text: str, ok: Callable[[float], bool], what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or not all(ok(v) for v in values):  # NaN fails every comparison
        raise argparse.ArgumentTypeError(f"{text!r} must be a comma-separated list of {what}")
    return values


def float_list(text: str) -> list[float]:
    return _number_list(text, lambda v: 0 < v < math.inf, "positive finite numbers")


def fraction_list(text: str) -> list[float]:
    """Comma-separated numbers in [0, 1] (embedding shares)."""
    return _number_list(text, lambda v: 0 <= v <= 1, "fractions in [0, 1]")


def add_shape_arguments(ap: argparse.ArgumentParser) -> None:
    """Options shared with `python -m sweep` (both size shapes the same way)."""
    ap.add_argument("--bytes", type=int, default=16_000_000, help="submission cap: code + compressed model")
    ap.add_argument("--scheme", default="int8+zlib", help="export scheme label as in EXPORT_SCHEMES (default int8+zlib)")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--head-dim", type=int, default=64, help="d / NUM_HEADS")
    ap.add_argument("--kv-ratio", type=int, default=2, help="NUM_HEADS / NUM_KV_HEADS (baseline 8/4 = 2)")
    ap.add_argument("--layers", type=parse_range, default=range(2, 25), help="depths to try, LO:HI")
    ap.add_argument("--dims", type=parse_range, default=None, help="widths to try, LO:HI (multiples of --head-dim)")
    ap.add_argument("--untied", action="store_true", help="separate output head (TIE_EMBEDDINGS=0)")
    ap.add_argument("--code-bytes", type=int, default=None, help="code bytes (default: train_gpt.py + modules it imports)")
    ap.add_argument("--float-max-numel", type=int, default=65_536, help="non-public schemes: QUANT_FLOAT_MAX_NUMEL")
    ap.add_argument("--calibration", type=Path, default=CALIBRATION_PATH)
    ap.add_argument("--regime", default="trained",
                    help="which calibration: trained (long runs; default) or cpu-short (checkpoints of minute-long CPU runs)")
    ap.add_argument("--upper-bound", action="store_true",
                    help="price every byte uncompressed instead of using the calibration (a safe bound for any weights)")


def check_shape_arguments(args) -> None:
    """Refuse degenerate sizes by name (ValueError), for every CLI that sizes shapes with add_shape_arguments."""
    rules = [("--bytes", args.bytes, args.bytes > 0, "must be positive"),
             ("--vocab", args.vocab, 2 <= args.vocab <= 65_536, "must be in 2..65536 (ids are uint16 in the shards)"),
             ("--head-dim", args.head_dim, args.head_dim > 0 and args.head_dim % 2 == 0, "must be a positive even number (RoPE)"),
             ("--kv-ratio", args.kv_ratio, args.kv_ratio > 0, "must be positive (NUM_HEADS / NUM_KV_HEADS)"),
             ("--float-max-numel", args.float_max_numel, args.float_max_numel >= 0, "must be >= 0"),
             ("--code-bytes", args.code_bytes, args.code_bytes is None or args.code_bytes >= 0, "must be >= 0")]
    for flag, value, ok, rule in rules:
        if not ok:
            raise ValueError(f"{flag} {value} {rule}")
    if args.dims is not None and not dims_of(args):
        raise ValueError(f"--dims {args.dims.start}:{args.dims.stop - 1} holds no multiple of --head-dim {args.head_dim}")


def dims_of(args) -> list[int]:
    r = args.dims or range(2 * args.head_dim, 32 * args.head_dim + 1)
    return [d for d in r if d % args.head_dim == 0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m arch.budget", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shape_arguments(ap)
    ap.add_argument("--mlp-kind", default="relu2", help=f"comma-separated kinds: {', '.join(sorted(MLP_REGISTRY))}")
    ap.add_argument("--expansions", type=float_list, default=[2.0, 2.66, 3.0, 4.0], help="hidden width / d values")
    ap.add_argument("--share", type=fraction_list, default=None, help="keep shapes with embedding share in LO,HI")
    ap.add_argument("--calibrate", nargs="+", metavar="RUN_DIR_GLOB",
                    help="refit the bytes model of --regime on these sweep run folders' checkpoints and save it")
    ap.add_argument("--calibrate-anchors", type=Path, nargs="?", const=ANCHORS_PATH, default=None, metavar="JSON",
                    help="refit bytes/symbol of --regime on published artifacts (default arch/budget_anchors.json), "
                         "keeping the other terms of --base-regime")
    ap.add_argument("--base-regime", default="cpu-short")
    args = ap.parse_args(argv)
    try:
        check_shape_arguments(args)
        scheme = get_scheme(args.scheme, args.float_max_numel)
        if args.calibrate:
            calibrate_cli(args, scheme)
            return
        if args.calibrate_anchors:
            try:
                anchors = json.loads(args.calibrate_anchors.read_text()).get(args.scheme, [])
            except (OSError, ValueError, AttributeError) as e:
                raise ValueError(f"--calibrate-anchors {args.calibrate_anchors} is not a readable anchors JSON object ({e})") from None
            if not anchors:
                raise ValueError(f"{args.calibrate_anchors} lists no artifacts for scheme {args.scheme!r}")
            cal = fit_from_anchors(scheme, anchors, load_calibration(args.scheme, args.calibration, args.base_regime))
            save_calibration(cal, args.calibration, args.regime)
            print(f"{args.scheme}@{args.regime}: coef {dict(zip(FEATURES, (round(c, 4) for c in cal.coef)))} "
                  f"max error {cal.rel_error:.2%} over {cal.points} artifacts -> {args.calibration}")
            return
        kinds = [k.strip() for k in args.mlp_kind.split(",") if k.strip()]
        unknown = [k for k in kinds if k not in MLP_REGISTRY]
        if unknown or not kinds:
            raise ValueError(f"--mlp-kind {','.join(unknown) or repr(args.mlp_kind)} not registered; choose from {sorted(MLP_REGISTRY)}")
        if args.share and len(args.share) > 1 and args.share[0] > args.share[1]:
            raise ValueError(f"--share {args.share[0]},{args.share[1]} must be LO,HI with LO <= HI")
        cal = uncalibrated(args.scheme) if args.upper_bound else load_calibration(args.scheme, args.calibration, args.regime)
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    try:
        code = args.code_bytes if args.code_bytes is not None else default_code_bytes()
    except ValueError as e:
        sys.exit(f"error: {e}")
    rows = candidate_shapes(args.bytes, scheme, cal, code, args.vocab, kinds, args.expansions, dims_of(args),
                            args.head_dim, args.kv_ratio, args.layers, not args.untied)
    if args.share:
        lo, hi = (args.share + args.share)[:2]
        rows = [p for p in rows if lo <= p.share <= hi]
    print(f"# budget {args.bytes} bytes, scheme {args.scheme}, vocab {args.vocab}, code {code} bytes; bytes model "
          f"{'UPPER BOUND (uncompressed)' if args.upper_bound else cal.regime or 'uncalibrated'} fitted on {cal.points} real artifacts, "
          f"stated error +-{cal.rel_error:.1%} of the model bytes (listed shapes fit even at +{cal.rel_error:.1%}). "
          f"{cal.note}")
    print(f"{'kind':<9}{'L':>4}{'d':>6}{'heads':>7}{'kv':>4}{'e':>6}{'width':>7}{'params':>12}{'emb%':>7}"
          f"{'model_B':>11}{'total_B':>11}{'+err_B':>11}{'fill%':>7}")
    for p in rows:
        s = p.shape
        width = s.mixer.hwnode_state_dim if s.mlp_kind == "hwnode" else round(s.mlp_mult * s.dim)
        print(f"{s.mlp_kind:<9}{s.layers:>4}{s.dim:>6}{s.heads:>7}{s.kv_heads:>4}{s.mlp_mult:>6.2f}{width:>7}"
              f"{p.params:>12,}{100 * p.share:>7.1f}{p.model_bytes:>11,}{p.total_bytes:>11,}{p.total_high:>11,}"
              f"{100 * p.total_high / args.bytes:>7.1f}")
    if not rows:
        print("# nothing fits: raise --bytes, or allow smaller --dims / --layers")


def calibrate_cli(args, scheme: Scheme) -> None:
    read_calibration_table(args.calibration)  # refuse a file we would not write into before measuring anything
    run_dirs = sorted({Path(p) for pattern in args.calibrate for p in glob.glob(pattern) if _is_trained_run(Path(p))})
    if not run_dirs:
        raise ValueError(f"--calibrate {' '.join(args.calibrate)} matched no finished sweep run folders")
    feats, sizes = measure_runs(run_dirs, scheme)
    note = (f"fitted {datetime.date.today()} on {len(sizes)} CPU-trained checkpoints "
            f"({int(feats[:, 0].min())}..{int(feats[:, 0].max())} symbol bytes)")
    cal = fit_calibration(args.scheme, feats, sizes, note)
    save_calibration(cal, args.calibration, args.regime)
    for run_dir, f, n in zip(run_dirs, feats, sizes):
        print(f"{run_dir.name}: real {int(n)} predicted {cal.predict(f):.0f} ({cal.predict(f) / n - 1:+.2%})")
    print(f"{args.scheme}@{args.regime}: coef {dict(zip(FEATURES, (round(c, 4) for c in cal.coef)))} "
          f"leave-one-out max error {cal.rel_error:.2%} over {cal.points} artifacts -> {args.calibration}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("arch.budget: interrupted; the --calibration file is either unchanged or completely rewritten")
