"""A record's model, served from its own process, for the audit to drive (`python -m eval.audit --record`).

Why a separate process: a record's code is untrusted. Loaded into the auditor's process it could patch torch,
the evaluator or the checks themselves (and print PASS). Here the record's packed train_gpt.py runs in a child
Python started in an empty temporary folder outside the repository (`python -I`: no PYTHONPATH, no user site,
the caller's knobs replaced by the record's own run_env), with its own modules served by its own bundle. The
child only answers requests: logits for token batches, its modules' train/eval modes, a fingerprint of its
state. Every verdict is computed in the auditor's process from those raw numbers. The child talks over two
private pipes in a fixed frame format (a JSON header, then raw little-endian array bytes); the auditor never
unpickles anything it sends, and checks every shape and dtype it receives.

What this does not prevent: the record's process can still behave differently when audited than when it
scored its logged run (e.g. by detecting the CPU). The audit makes that harder by driving the model exactly as
scoring does (same window length, batch size, mode and dtype), and `records verify` also re-scores the shipped
artifact with the verifier's evaluator and compares the logged score.

This module imports only the standard library, numpy and torch: its source is also the child's program.
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

_DTYPES = {"int64": np.int64, "float32": np.float32}
_MODULE_INTERNALS = frozenset(vars(nn.Module()).keys()) | {"training"}
_MAX_ITEMS = 100_000  # containers longer than this are digested by length and a sample


# ---------- state fingerprints (used in-process too) ----------

def _tensor_digest(t: torch.Tensor) -> str:
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    data = t.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return f"{tuple(t.shape)}:{t.dtype}:" + hashlib.blake2b(data, digest_size=16).hexdigest()


def _value_digest(v, depth: int = 0, tensors_only: bool = False) -> str:
    """tensors_only: a declared weight-derived cache, whose keys hold run-dependent ints (version counters)."""
    if isinstance(v, torch.Tensor):
        return _tensor_digest(v)
    if isinstance(v, (int, float, complex, str, bytes, bool, type(None))):
        return "" if tensors_only else repr(v)
    if isinstance(v, torch.Generator):
        return _tensor_digest(v.get_state())
    if depth > 4 or isinstance(v, nn.Module) or callable(v) and not hasattr(v, "__dict__"):
        return type(v).__name__
    if isinstance(v, dict):
        items = list(v.items())
        sample = items if len(items) <= _MAX_ITEMS else items[:: len(items) // _MAX_ITEMS]
        body = ",".join(f"{_value_digest(k, depth + 1, tensors_only)}={_value_digest(x, depth + 1, tensors_only)}" for k, x in sample)
        return f"dict{len(items)}:" + hashlib.blake2b(body.encode(), digest_size=16).hexdigest()
    if isinstance(v, (list, tuple, set, frozenset)):
        items = sorted(v, key=repr) if isinstance(v, (set, frozenset)) else list(v)
        sample = items if len(items) <= _MAX_ITEMS else items[:: len(items) // _MAX_ITEMS]
        body = ",".join(_value_digest(x, depth + 1, tensors_only) for x in sample)
        return f"{type(v).__name__}{len(items)}:" + hashlib.blake2b(body.encode(), digest_size=16).hexdigest()
    if hasattr(v, "__dict__"):
        return f"{type(v).__name__}:" + _value_digest(dict(vars(v)), depth + 1, tensors_only)
    return type(v).__name__


def state_fingerprint(model: nn.Module) -> dict[str, str]:
    """A digest of everything a module tree holds: parameters, buffers (persistent or not) and every other
    attribute of every submodule (caches, counters, generators), by name. Equal digests: nothing changed.
    A module's `audit_derived_caches` (caches computed from its weights alone) are compared by tensor content."""
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        out["parameter " + name] = _tensor_digest(p)
    for name, b in model.named_buffers(remove_duplicate=False):
        out["buffer " + name] = _tensor_digest(b)
    for mname, m in model.named_modules(remove_duplicate=False):
        derived = set(getattr(m, "audit_derived_caches", ()))
        for key, value in vars(m).items():
            if key not in _MODULE_INTERNALS:
                out[f"attribute {mname + '.' if mname else ''}{key}"] = _value_digest(value, tensors_only=key in derived)
    return out


def changed_names(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# ---------- the frame format (both sides) ----------

def _write_frame(fd: int, header: dict, payload: bytes = b"") -> None:
    head = json.dumps(dict(header, nbytes=len(payload))).encode()
    data = struct.pack(">I", len(head)) + head + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, timeout_s: float | None) -> bytes:
    chunks, left = [], n
    while left:
        if timeout_s is not None and not select.select([fd], [], [], timeout_s)[0]:
            raise TimeoutError(f"no answer within {timeout_s:.0f} s")
        chunk = os.read(fd, min(left, 1 << 24))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, timeout_s: float | None = None, max_header: int = 1 << 20) -> tuple[dict, bytes]:
    (n,) = struct.unpack(">I", _read_exact(fd, 4, timeout_s))
    if n > max_header:
        raise ValueError(f"frame header of {n} bytes")
    header = json.loads(_read_exact(fd, n, timeout_s))
    if not isinstance(header, dict) or not isinstance(header.get("nbytes"), int) or header["nbytes"] < 0:
        raise ValueError("malformed frame header")
    return header, _read_exact(fd, header["nbytes"], timeout_s)


def _array(header: dict, payload: bytes, name: str = "array") -> np.ndarray:
    dtype = _DTYPES.get(header.get("dtype"))
    shape = header.get("shape")
    if dtype is None or not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"malformed {name}: dtype {header.get('dtype')!r}, shape {shape!r}")
    if int(np.prod(shape)) * np.dtype(dtype).itemsize != len(payload):
        raise ValueError(f"{name} of shape {shape} does not match its {len(payload)} bytes")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def _pack(a: np.ndarray) -> tuple[dict, bytes]:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.name, "shape": list(a.shape)}, a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


# ---------- the child: the record's model behind a pipe ----------

def repo_modules(repo: str) -> list[str]:
    """Modules imported from files under `repo` (the verifier's checkout) that are not part of the Python
    environment itself: a virtual environment made inside the checkout (./run.sh's .venv) is not the repository."""
    import sysconfig

    env_dirs = {sys.prefix, sys.exec_prefix, sys.base_prefix, *sysconfig.get_paths().values()}
    env_dirs = tuple(os.path.join(os.path.realpath(d), "") for d in env_dirs if d)
    files = ((n, os.path.realpath(f)) for n, m in list(sys.modules.items()) if (f := getattr(m, "__file__", None)))
    return sorted(n for n, f in files if f.startswith(repo) and not f.startswith(env_dirs))


def _serve(entry: str, rfd: int, wfd: int, repo: str, preset: str) -> None:
    import contextlib
    import importlib
    import runpy

    g = runpy.run_path(entry, run_name="__pg_audit_target__")  # the packed trainer, without running main()
    state: dict = {}

    def build() -> None:
        try:
            args = g["Hyperparameters"](env=dict(os.environ), device_type=preset)  # the run's defaults; the model stays on the CPU
        except TypeError:
            args = g["Hyperparameters"]()
        state["args"], state["model"] = args, g["build_model"](args).eval()
        amp = torch.bfloat16 if getattr(args, "dtype", "fp32") == "bf16" else None
        state["autocast"] = (lambda: torch.autocast("cpu", dtype=amp)) if amp else contextlib.nullcontext

    def load(path: str) -> None:
        if path.endswith(".pt"):
            sd = torch.load(path, map_location="cpu", weights_only=True)
        else:
            loader = g.get("load_artifact") or importlib.import_module("quant.export").load_artifact
            sd = loader(Path(path))
        state["model"].load_state_dict(sd, strict=True)

    def info() -> dict:
        args = state["args"]
        names = ("vocab_size", "train_seq_len", "eval_seq_len", "eval_stride", "eval_batch_seqs", "dtype", "ttt_enabled", "ttt_mode",
                 "ttt_lr", "ttt_lora_rank", "ttt_epochs", "ttt_chunk_tokens", "data_path", "tokenizer_path", "val_batch_size")
        return {"knobs": {n: getattr(args, n, None) for n in names}, "repo_modules": repo_modules(repo)}

    build()
    while True:
        try:
            header, payload = _read_frame(rfd)
        except EOFError:
            return
        op = header.get("op")
        try:
            model = state["model"]
            if op == "quit":
                _write_frame(wfd, {"ok": True})
                return
            if op == "info":
                _write_frame(wfd, {"ok": True, "info": info()})
            elif op == "load":
                load(header["path"])
                _write_frame(wfd, {"ok": True})
            elif op in ("logits", "own_nll"):
                x = torch.from_numpy(_array(header, payload, "inputs").copy())
                with torch.inference_mode(), state["autocast"]():
                    out = model.forward_logits(x) if op == "logits" else model(x[0], x[1], reduction="none")  # own_nll: (2, B, T)
                h, data = _pack(out.float().numpy())
                _write_frame(wfd, dict(h, ok=True), data)
            elif op == "mode":
                model.train(bool(header["training"]))
                _write_frame(wfd, {"ok": True})
            elif op == "modes":
                _write_frame(wfd, {"ok": True, "training": [n for n, m in model.named_modules() if m.training]})
            elif op == "fingerprint":
                _write_frame(wfd, {"ok": True, "fingerprint": state_fingerprint(model)})
            else:
                _write_frame(wfd, {"ok": False, "error": f"unknown op {op!r}"})
        except Exception as e:  # the parent reports it; the child keeps serving
            _write_frame(wfd, {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]})


# ---------- the parent: a proxy that looks enough like a model for the evaluator and the audit ----------

class RemoteError(RuntimeError):
    """The record's process failed, hung, or answered something malformed."""


class _Mode:
    def __init__(self, training: bool):
        self.training = training


class RemoteModel:
    """The packed record `entry`, run in a child process from a fresh temporary folder outside `repo_root`,
    with exactly `env` (plus a minimal PATH/HOME/locale) as its environment; its knobs start from the `preset`
    defaults (cpu or cuda: the device the record ran on), its model runs on the CPU."""

    def __init__(self, entry: Path, env: dict[str, str], repo_root: Path, timeout_s: float = 600.0, preset: str = "cpu"):
        self.timeout_s = timeout_s
        self.workdir = Path(tempfile.mkdtemp(prefix="pg-audit-"))
        if self.workdir.resolve().is_relative_to(Path(repo_root).resolve()):
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise RemoteError(f"the temp folder {self.workdir} is inside the repository; set TMPDIR elsewhere")
        shutil.copyfile(entry, self.workdir / "train_gpt.py")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT") if k in os.environ}
        child_env = dict(base, **env)
        child_env.setdefault("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        self._log = open(self.workdir / "child.log", "w+b")
        source = Path(__file__).read_text(encoding="utf-8")
        cmd = [sys.executable, "-I", "-c", source, "--serve", "train_gpt.py", str(to_child_r), str(from_child_w),
               str(Path(repo_root).resolve()) + os.sep, preset]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=child_env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     pass_fds=(to_child_r, from_child_w))
        os.close(to_child_r)
        os.close(from_child_w)
        self._w, self._r = to_child_w, from_child_r
        self.info = self._call({"op": "info"})[0]["info"]
        self._training = [str(n) for n in self._call({"op": "modes"})[0]["training"]]
        self.vocab_size = int(self.info["knobs"]["vocab_size"])

    # -- plumbing --
    def log_tail(self, n: int = 1500) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-n:].strip().replace("\n", " | ")

    def _call(self, header: dict, payload: bytes = b"") -> tuple[dict, bytes]:
        try:
            _write_frame(self._w, header, payload)
            reply, data = _read_frame(self._r, self.timeout_s)
        except (OSError, EOFError, TimeoutError, ValueError) as e:
            raise RemoteError(f"the record's process stopped answering ({e}): {self.log_tail()}") from None
        if not reply.get("ok"):
            raise RemoteError(f"the record's code failed on {header.get('op')!r}: {reply.get('error')}")
        return reply, data

    def _tensor_call(self, op: str, x: torch.Tensor, expect: tuple) -> torch.Tensor:
        h, data = _pack(x.detach().cpu().to(torch.int64).numpy())
        reply, payload = self._call(dict(h, op=op), data)
        out = _array(reply, payload, op)
        if tuple(out.shape[: len(expect)]) != expect:
            raise RemoteError(f"{op} answered shape {tuple(out.shape)} for inputs {tuple(x.shape)}")
        return torch.from_numpy(out.copy())

    # -- what the evaluator and the audit use --
    def load(self, artifact: Path) -> None:
        self._call({"op": "load", "path": str(Path(artifact).resolve())})

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self._tensor_call("logits", x, tuple(x.shape))
        if out.ndim != 3:
            raise RemoteError(f"forward_logits answered shape {tuple(out.shape)}")
        return out

    def own_nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The model's own training forward(x, y, reduction='none') (what pre-logprob evaluators scored)."""
        out = self._tensor_call("own_nll", torch.stack((x, y)), tuple(x.shape))
        return out.reshape(x.shape)

    def train(self, mode: bool = True) -> "RemoteModel":
        self._call({"op": "mode", "training": bool(mode)})
        self._training = [str(n) for n in self._call({"op": "modes"})[0]["training"]]
        return self

    def eval(self) -> "RemoteModel":
        return self.train(False)

    def named_modules(self):
        return [(n, _Mode(True)) for n in self._training] or [("", _Mode(False))]

    def state_fingerprint(self) -> dict[str, str]:
        fp = self._call({"op": "fingerprint"})[0]["fingerprint"]
        if not isinstance(fp, dict):
            raise RemoteError("malformed fingerprint")
        return {str(k): str(v) for k, v in fp.items()}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                _write_frame(self._w, {"op": "quit"})
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "RemoteModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "--serve":
    _serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
