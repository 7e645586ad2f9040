"""The PGQ artifact container: a checked header around one compressed payload.

    offset  size  field
    0       4     magic b"PGQA"
    4       1     format version (1)
    5       1     compressor id (index into quant.schemes.COMPRESSORS)
    6       4     payload length, little-endian u32
    10      4     CRC-32 of the payload, little-endian u32
    14      ...   payload

Payload, before compression: u32 manifest length, the manifest (JSON: scheme, bit widths, per-tensor
kind/shape/dtype), then the quantized symbols of every tensor (one int8 per value), then all 2-byte
values (fp16 scales and fp16 tensors) and all 4-byte values (fp32 tensors) byte-shuffled (every value's
first bytes, then its second bytes, ...) because float exponents compress, mantissas do not; then raw
non-float tensors. With `ans` the payload is instead: u32 length of the rANS streams, the per-tensor
streams, then the rest (manifest with the symbol histograms, side data) through lzma.
A truncated or corrupted file fails the length or checksum test with a message, never loads silently.
"""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import torch

from quant import compress as codecs
from quant.plan import dtype_from_name
from quant.schemes import COMPRESSORS
from quant.qmodel import MAGIC, QuantizedModel  # noqa: F401 (re-exported: the container's magic and content)
from quant.quantize import qmax_for

VERSION = 1
_HEADER = struct.Struct("<4sBBII")


def _shuffle(arrays: list[np.ndarray], width: int) -> bytes:
    if not arrays:
        return b""
    flat = np.concatenate([a.reshape(-1).view(np.uint8) for a in arrays]).reshape(-1, width)
    return flat.T.tobytes()


def _unshuffle(data: bytes, width: int) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(width, -1).T.copy().reshape(-1)


def _stored_dtype(kind: str, dtype: str) -> np.dtype:
    return {"f16": np.dtype("<f2"), "f32": np.dtype("<f4")}.get(kind) or torch.empty(0, dtype=dtype_from_name(dtype)).numpy().dtype


def serialize(model: QuantizedModel, compressor: str) -> bytes:
    if compressor not in COMPRESSORS:
        raise ValueError(f"unknown compressor {compressor!r}; choose one of {list(COMPRESSORS)}")
    quantized = [n for n, e in model.entries.items() if e["kind"] in ("row", "tensor")]
    manifest = {"scheme": model.scheme, "tensors": [dict(name=n, **e) for n, e in model.entries.items()]}
    two, four, raw = [model.scales[n].numpy().astype("<f2") for n in quantized], [], []
    for n, e in model.entries.items():
        if e["kind"] == "f16":
            two.append(model.floats[n].numpy().astype("<f2"))
        elif e["kind"] == "f32":
            four.append(model.floats[n].numpy().astype("<f4"))
        elif e["kind"] == "raw":
            raw.append(model.floats[n].contiguous().numpy().tobytes())
    side = _shuffle(two, 2) + _shuffle(four, 4) + b"".join(raw)
    if compressor == "ans":
        streams = []
        for n in quantized:
            qmax = qmax_for(model.entries[n]["bits"])
            sym = model.symbols[n].numpy()
            counts = codecs.symbol_histogram(sym, qmax)
            stream = codecs.ans_encode(sym, qmax, counts)
            manifest["tensors"][list(model.entries).index(n)].update(counts=counts.tolist(), ans_bytes=len(stream))
            streams.append(stream)
        head = json.dumps(manifest, separators=(",", ":")).encode()
        coded = b"".join(streams)
        payload = struct.pack("<I", len(coded)) + coded + codecs.compress("lzma", struct.pack("<I", len(head)) + head + side)
    else:
        head = json.dumps(manifest, separators=(",", ":")).encode()
        symbols = b"".join(model.symbols[n].numpy().tobytes() for n in quantized)
        payload = codecs.compress(compressor, struct.pack("<I", len(head)) + head + symbols + side)
    header = _HEADER.pack(MAGIC, VERSION, COMPRESSORS.index(compressor), len(payload), zlib.crc32(payload))
    return header + payload


def read_header(blob: bytes) -> tuple[str, bytes]:
    """(compressor, payload) after the magic, version, length and checksum tests."""
    if len(blob) < _HEADER.size and MAGIC.startswith(blob[:4]):
        raise ValueError(f"PGQ artifact is truncated: {len(blob)} bytes, shorter than its {_HEADER.size}-byte header")
    if blob[:4] != MAGIC:
        raise ValueError(f"not a PGQ artifact (first bytes {blob[:4]!r}, expected {MAGIC!r}); "
                         "public int8+zlib files (final_model.int8.ptz) are read with quant.int8.unpack_int8_zlib")
    _, version, comp_id, length, crc = _HEADER.unpack_from(blob)
    if version != VERSION:
        raise ValueError(f"PGQ artifact version {version} is not supported (this code reads version {VERSION})")
    if comp_id >= len(COMPRESSORS):
        raise ValueError(f"PGQ artifact names compressor id {comp_id}, unknown to this code")
    payload = blob[_HEADER.size:]
    if len(payload) != length:
        raise ValueError(f"PGQ artifact is truncated or padded: header says {length} payload bytes, file has "
                         f"{len(payload)}; re-export it")
    if zlib.crc32(payload) != crc:
        raise ValueError("PGQ artifact checksum mismatch: the file is corrupted; re-export it")
    return COMPRESSORS[comp_id], payload


def deserialize(blob: bytes) -> QuantizedModel:
    compressor, payload = read_header(blob)
    if compressor == "ans":  # u32 length of the rANS streams, the streams, then the lzma-coded rest
        (coded_len,) = struct.unpack_from("<I", payload)
        coded = payload[4:4 + coded_len]
        return _parse_body(codecs.decompress("ans", payload[4 + coded_len:]), compressor, coded)
    body = codecs.decompress(compressor, payload)
    return _parse_body(body, compressor, None)


def _parse_body(body: bytes, compressor: str, symbol_streams: bytes | None) -> QuantizedModel:
    (head_len,) = struct.unpack_from("<I", body)
    manifest = json.loads(body[4:4 + head_len])
    pos = 4 + head_len
    model = QuantizedModel(scheme=manifest["scheme"])
    entries = manifest["tensors"]
    quantized = [e for e in entries if e["kind"] in ("row", "tensor")]
    sym_pos = 0
    for e in quantized:
        numel = int(np.prod(e["shape"], dtype=np.int64))
        if symbol_streams is None:
            sym = np.frombuffer(body, dtype=np.int8, count=numel, offset=pos).copy()
            pos += numel
        else:
            stream = symbol_streams[sym_pos:sym_pos + e["ans_bytes"]]
            sym_pos += e["ans_bytes"]
            sym = codecs.ans_decode(stream, numel, qmax_for(e["bits"]), np.asarray(e["counts"], dtype=np.int64))
        model.symbols[e["name"]] = torch.from_numpy(sym).reshape(e["shape"])
    rows = {e["name"]: (e["shape"][0] if e["kind"] == "row" else 1) for e in quantized}
    two_names = [(e["name"], rows[e["name"]]) for e in quantized]
    two_names += [(e["name"], int(np.prod(e["shape"], dtype=np.int64))) for e in entries if e["kind"] == "f16"]
    four_names = [(e["name"], int(np.prod(e["shape"], dtype=np.int64))) for e in entries if e["kind"] == "f32"]
    two_len, four_len = 2 * sum(n for _, n in two_names), 4 * sum(n for _, n in four_names)
    two = _unshuffle(body[pos:pos + two_len], 2).view("<f2") if two_len else np.zeros(0, "<f2")
    pos += two_len
    four = _unshuffle(body[pos:pos + four_len], 4).view("<f4") if four_len else np.zeros(0, "<f4")
    pos += four_len
    off = 0
    for name, n in two_names:
        arr = torch.from_numpy(two[off:off + n].astype(np.float16))
        off += n
        if name in model.symbols and name not in model.scales:
            model.scales[name] = arr
        else:
            model.floats[name] = arr
    off = 0
    for name, n in four_names:
        model.floats[name] = torch.from_numpy(four[off:off + n].astype(np.float32))
        off += n
    for e in entries:
        shape = tuple(e["shape"])
        if e["kind"] == "raw":
            dt = _stored_dtype("raw", e["dtype"])
            n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            model.floats[e["name"]] = torch.from_numpy(np.frombuffer(body, dtype=dt, count=n // dt.itemsize, offset=pos).copy())
            pos += n
        if e["name"] in model.floats:
            model.floats[e["name"]] = model.floats[e["name"]].reshape(shape)
        model.entries[e["name"]] = {k: v for k, v in e.items() if k not in ("name", "counts", "ans_bytes")}
    if pos != len(body):
        raise ValueError(f"PGQ payload holds {len(body) - pos} bytes more than its manifest describes; the file is corrupted")
    return model
