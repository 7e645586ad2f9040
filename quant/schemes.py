"""Export schemes: the `<scheme>+<compressor>` specs of EXPORT_SCHEMES and the QUANT_MIX rules, parsed and checked.

A scheme is `int8`, `int6`, `int5`, `int4` (every quantizable tensor at that width) or `mixed` (bits chosen
by tensor-name substring rules, QUANT_MIX, e.g. `tok_emb=8,attn=6,mlp=5,*=6`; 16 means fp16 passthrough).
Which precision each tensor gets under a scheme is quant/plan.py's `tensor_plan`, imported only by the parts that
use a non-public scheme (the container export, QAT, GPTQ).
"""
from __future__ import annotations

from dataclasses import dataclass

SMALL_TENSOR_MAX_NUMEL = 65_536  # the public baseline: float tensors this small ship as fp16, unquantized
UNIFORM_SCHEMES = {"int8": 8, "int6": 6, "int5": 5, "int4": 4}
DEFAULT_MIX = "tok_emb=8,lm_head=8,attn=6,mlp=5,*=6"
COMPRESSORS = ("zlib", "zstd", "lzma", "brotli", "ans")
PUBLIC_SPEC = "int8+zlib"  # the public baseline's format, written by quant.int8, never by the container


@dataclass(frozen=True)
class ExportSpec:
    scheme: str
    compressor: str

    @property
    def label(self) -> str:  # as in `Total submission size int6+zstd: ...`
        return f"{self.scheme}+{self.compressor}"

    @property
    def is_public(self) -> bool:
        return self.label == PUBLIC_SPEC

    @property
    def filename(self) -> str:
        return "final_model.int8.ptz" if self.is_public else f"final_model.{self.scheme}.{self.compressor}.pgq"

    @property
    def metric_name(self) -> str:  # final_<scheme>_<compressor>_roundtrip_exact
        return f"final_{self.scheme}_{self.compressor}_roundtrip"


def parse_mix(text: str) -> list[tuple[str, int]]:
    """`pattern=bits,...` -> [(pattern, bits)]; the first pattern contained in a tensor name wins, `*` matches all."""
    rules = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        pattern, sep, bits = item.partition("=")
        if not sep or not pattern.strip() or not bits.strip().isdigit() or int(bits) not in (4, 5, 6, 7, 8, 16):
            raise ValueError(f"QUANT_MIX rule {item!r} must look like pattern=BITS with BITS in 4..8 or 16 (fp16), "
                             f"e.g. {DEFAULT_MIX}")
        rules.append((pattern.strip(), int(bits)))
    if not rules:
        raise ValueError(f"QUANT_MIX is empty; give rules like {DEFAULT_MIX}")
    return rules


def parse_export_specs(text: str) -> list[ExportSpec]:
    """`int8+zlib,int6+zstd,...` -> specs, checked (known scheme, known and installed compressor, no duplicates)."""
    specs = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        scheme, sep, comp = item.partition("+")
        if not sep:
            raise ValueError(f"EXPORT_SCHEMES entry {item!r} must be <scheme>+<compressor>, e.g. int6+zstd")
        if scheme not in UNIFORM_SCHEMES and scheme != "mixed":
            raise ValueError(f"EXPORT_SCHEMES entry {item!r}: unknown scheme {scheme!r}; "
                             f"choose one of {sorted(UNIFORM_SCHEMES) + ['mixed']}")
        if comp not in COMPRESSORS:
            raise ValueError(f"EXPORT_SCHEMES entry {item!r}: unknown compressor {comp!r}; choose one of {list(COMPRESSORS)}")
        spec = ExportSpec(scheme, comp)
        if spec in specs:
            raise ValueError(f"EXPORT_SCHEMES lists {item!r} twice")
        specs.append(spec)
    if not specs:
        raise ValueError("EXPORT_SCHEMES is empty; the default is int8+zlib")
    for spec in specs:
        check_available(spec.compressor)
    return specs


def check_available(name: str) -> None:
    """Fail early (at knob parsing) when a compressor's library is missing."""
    module, hint = {"zstd": ("zstandard", "pip install zstandard"), "brotli": ("brotli", "pip install brotli"),
                    "ans": ("constriction", "pip install constriction")}.get(name, (None, ""))
    if module is None:
        return
    try:
        __import__(module)
    except ImportError:
        raise ValueError(f"compressor {name!r} needs the {module!r} package: {hint}") from None
