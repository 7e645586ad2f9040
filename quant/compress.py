"""Byte compressors (zlib, zstd, lzma, brotli) and `ans`, an order-0 entropy coder over quantized symbols.

`ans` codes each tensor's symbols with rANS (the `constriction` library) under that tensor's own symbol
histogram, which lands within a fraction of a percent of the empirical entropy; everything else in the
artifact (manifest, histograms, scales, float tensors) goes through lzma. Only the PGQ container
(quant/container.py) compresses through here: the public int8+zlib format calls zlib itself (quant/int8.py).
"""
from __future__ import annotations

import lzma
import zlib

import numpy as np

ZSTD_LEVEL = 22  # overridden by the ZSTD_LEVEL knob through set_zstd_level (train_gpt, when a spec uses zstd)
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def set_zstd_level(level: int) -> None:
    global ZSTD_LEVEL
    if not 1 <= level <= 22:
        raise ValueError(f"ZSTD_LEVEL={level} must be in 1..22")
    ZSTD_LEVEL = level


def compress(name: str, data: bytes) -> bytes:
    if name == "zlib":
        return zlib.compress(data, level=9)
    if name == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if name in ("lzma", "ans"):
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if name == "brotli":
        import brotli

        return brotli.compress(data, quality=11, lgwin=24)
    raise ValueError(f"unknown compressor {name!r}")


def decompress(name: str, data: bytes) -> bytes:
    try:
        if name == "zlib":
            return zlib.decompress(data)
        if name == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().decompress(data)
        if name in ("lzma", "ans"):
            return lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        if name == "brotli":
            import brotli

            return brotli.decompress(data)
    except Exception as e:  # each library raises its own error type for bad data
        raise ValueError(f"the {name} payload does not decompress ({type(e).__name__}: {e}); "
                         "the artifact is truncated or corrupted") from e
    raise ValueError(f"unknown compressor {name!r}")


# ---- ans: per-tensor order-0 rANS over symbol histograms ----

def symbol_histogram(symbols: np.ndarray, qmax: int) -> np.ndarray:
    """Counts of each value in [-qmax, qmax] (index = value + qmax)."""
    return np.bincount(symbols.astype(np.int64).ravel() + qmax, minlength=2 * qmax + 1).astype(np.int64)


def _model(counts: np.ndarray):
    import constriction

    # Probabilities are rebuilt from the stored integer counts on both sides, so the models agree bit for bit.
    return constriction.stream.model.Categorical(counts.astype(np.float64) / counts.sum(), perfect=False)


def ans_encode(symbols: np.ndarray, qmax: int, counts: np.ndarray) -> bytes:
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse((symbols.astype(np.int32).ravel() + qmax), _model(counts))
    return coder.get_compressed().astype("<u4").tobytes()


def ans_decode(data: bytes, numel: int, qmax: int, counts: np.ndarray) -> np.ndarray:
    import constriction

    if len(data) % 4:
        raise ValueError("an ans stream is not a whole number of 32-bit words; the artifact is corrupted")
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    out = coder.decode(_model(counts), numel).astype(np.int64) - qmax
    return out.astype(np.int8)
