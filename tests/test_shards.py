"""The shard format (data/shards.py) and the deterministic loader (data/loader.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.export import write_shard
from data.loader import DistributedTokenLoader, TokenStream
from data.shards import (
    HEADER_BYTES,
    HEADER_INTS,
    MAX_VOCAB,
    SHARD_MAGIC,
    SHARD_VERSION,
    ShardFormatError,
    list_shards,
    load_tokens,
    read_header,
    read_shard,
)


def _raw_shard(path, header_values=None, payload=b""):
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1] = SHARD_MAGIC, SHARD_VERSION
    for i, v in (header_values or {}).items():
        header[i] = v
    path.write_bytes(header.tobytes() + payload)
    return path


# ---------------------------------------------------------------------------------------------- format


def test_roundtrip(tmp_path):
    tokens = np.array([1, 0, 5, 65535, 1023, 1], dtype=np.int64)
    p = tmp_path / "fineweb_val_000000.bin"
    nbytes = write_shard(p, tokens)
    assert nbytes == HEADER_BYTES + 2 * tokens.size == p.stat().st_size
    assert read_header(p) == tokens.size
    out = read_shard(p)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, tokens)
    # the layout itself: 256 little-endian int32 then little-endian uint16
    raw = p.read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert header.size == 256 and list(header[:3]) == [20240520, 1, tokens.size] and not header[3:].any()
    np.testing.assert_array_equal(np.frombuffer(raw[HEADER_BYTES:], dtype="<u2"), tokens)
    assert not list(tmp_path.glob("*.tmp"))  # the temp file was renamed into place


def test_empty_shard_roundtrip(tmp_path):
    p = tmp_path / "s.bin"
    write_shard(p, [])
    assert read_header(p) == 0
    assert read_shard(p).size == 0


def test_wrong_magic(tmp_path):
    p = _raw_shard(tmp_path / "s.bin", {0: 12345, 2: 1}, b"\x01\x00")
    with pytest.raises(ShardFormatError, match="magic"):
        read_shard(p)


def test_wrong_version(tmp_path):
    p = _raw_shard(tmp_path / "s.bin", {1: 2, 2: 1}, b"\x01\x00")
    with pytest.raises(ShardFormatError, match="version 2"):
        read_shard(p)


def test_truncated_payload(tmp_path):
    p = _raw_shard(tmp_path / "s.bin", {2: 10}, b"\x01\x00" * 9)
    with pytest.raises(ShardFormatError, match="size mismatch"):
        read_header(p)


def test_padded_file(tmp_path):
    p = _raw_shard(tmp_path / "s.bin", {2: 2}, b"\x01\x00" * 2 + b"\x00")
    with pytest.raises(ShardFormatError, match="size mismatch"):
        read_shard(p)


def test_file_shorter_than_header(tmp_path):
    p = tmp_path / "s.bin"
    p.write_bytes(np.array([SHARD_MAGIC, SHARD_VERSION, 0], dtype="<i4").tobytes())
    with pytest.raises(ShardFormatError, match="shorter than"):
        read_header(p)


def test_missing_file(tmp_path):
    with pytest.raises(ShardFormatError, match="no such shard"):
        read_header(tmp_path / "nope.bin")


def test_negative_count(tmp_path):
    p = _raw_shard(tmp_path / "s.bin", {2: -1})
    with pytest.raises(ShardFormatError, match="negative"):
        read_header(p)


@pytest.mark.parametrize("bad", [[-1, 5], [0, MAX_VOCAB], [70000]])
def test_write_refuses_ids_outside_uint16(tmp_path, bad):
    p = tmp_path / "s.bin"
    with pytest.raises(ValueError, match="uint16"):
        write_shard(p, np.array(bad))
    assert not p.exists() and not list(tmp_path.iterdir())


def test_write_refuses_2d(tmp_path):
    with pytest.raises(ValueError, match="1-D"):
        write_shard(tmp_path / "s.bin", np.zeros((2, 2), dtype=np.int64))


# ---------------------------------------------------------------------------------------------- globs


def test_sorted_glob_and_bytes_sidecar_exclusion(tmp_path):
    for i in (10, 2, 0, 1):
        write_shard(tmp_path / f"fineweb_val_{i:06d}.bin", [i, i])
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", [7, 7])  # CaseOps byte sidecar
    files = list_shards(str(tmp_path / "fineweb_val_*.bin"))
    assert [f.name for f in files] == [f"fineweb_val_{i:06d}.bin" for i in (0, 1, 2, 10)]
    np.testing.assert_array_equal(load_tokens(str(tmp_path / "fineweb_val_*.bin")), [0, 0, 1, 1, 2, 2, 10, 10])


def test_missing_pattern_message(tmp_path):
    pattern = str(tmp_path / "fineweb_train_*.bin")
    with pytest.raises(FileNotFoundError) as e:
        list_shards(pattern)
    msg = str(e.value)
    assert pattern in msg and "DATA_PATH" in msg and "data.download" in msg and "data.export" in msg


def test_only_sidecars_is_missing(tmp_path):
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", [1])
    with pytest.raises(FileNotFoundError):
        list_shards(str(tmp_path / "fineweb_val_*.bin"))


# ---------------------------------------------------------------------------------------------- loader


def _stream_shards(tmp_path, sizes=(1000, 777, 1500)):
    start = 0
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"fineweb_train_{i:06d}.bin", np.arange(start, start + n))
        start += n
    return str(tmp_path / "fineweb_train_*.bin"), start


def test_token_stream_crosses_shards_and_wraps(tmp_path):
    pattern, total = _stream_shards(tmp_path)
    s = TokenStream(pattern)
    got = torch.cat([s.take(n) for n in (600, 600, 1500, total - 2700 + 5)])
    expected = np.concatenate([np.arange(total), np.arange(5)])
    np.testing.assert_array_equal(got.numpy(), expected)


def test_batch_shapes_and_shift(tmp_path):
    pattern, _ = _stream_shards(tmp_path)
    loader = DistributedTokenLoader(pattern, rank=0, world_size=1, device=torch.device("cpu"))
    x, y = loader.next_batch(global_tokens=64, seq_len=16, grad_accum_steps=1)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    torch.testing.assert_close(x.flatten()[1:], y.flatten()[:-1])


def test_one_rank_x8_equals_two_ranks_x4(tmp_path):
    pattern, _ = _stream_shards(tmp_path)
    cpu = torch.device("cpu")
    global_tokens, seq_len, steps = 256, 16, 6  # 6 steps x 8 x 33 tokens wraps around the 3277-token stream

    single = DistributedTokenLoader(pattern, 0, 1, cpu)
    ref = [[single.next_batch(global_tokens, seq_len, 8) for _ in range(8)] for _ in range(steps)]

    ranks = [DistributedTokenLoader(pattern, r, 2, cpu) for r in range(2)]
    for step in range(steps):
        got = [[ranks[r].next_batch(global_tokens, seq_len, 4) for _ in range(4)] for r in range(2)]
        for micro in range(4):
            for r in range(2):
                x, y = got[r][micro]
                rx, ry = ref[step][2 * micro + r]  # rank r's micro-step k is the single rank's micro-step 2k + r
                torch.testing.assert_close(x, rx)
                torch.testing.assert_close(y, ry)
        # and per optimizer step the same multiset of training tokens
        all_x = torch.cat([got[r][m][0].flatten() for r in range(2) for m in range(4)]).sort().values
        ref_x = torch.cat([b[0].flatten() for b in ref[step]]).sort().values
        torch.testing.assert_close(all_x, ref_x)


def test_float_tokens_refused(tmp_path):
    with pytest.raises(ValueError, match="integer ids"):
        write_shard(tmp_path / "x.bin", np.array([1.7, 2.0]))


def test_all_empty_train_shards_refused(tmp_path):
    from data.loader import TokenStream

    write_shard(tmp_path / "fineweb_train_000000.bin", np.array([], dtype=np.uint16))
    with pytest.raises(ValueError, match="empty"):
        TokenStream(str(tmp_path / "fineweb_train_*.bin"))
