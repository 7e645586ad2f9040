"""The code an official record folder ships, read without running it.

Official records ship readable scripts or self-extracting ones (`exec(lzma.decompress(base64.b85decode("...")))`,
some with raw LZMA2); both are decoded here statically. The scripts a record runs are its `train_gpt.py` (else its
`train*.py`), the local modules they import and the local files they exec by name (a stub that execs
`train_gpt_decode.py`). A package they import at module level that is neither the standard library, one of the
challenge's own requirements, nor a local file is an extra package: the rules then ask for a requirements.txt.
An import inside `try: ... except ImportError` is optional and needs nothing.
"""
from __future__ import annotations

import ast
import base64
import functools
import lzma
import re
import sys
import zlib
from pathlib import Path

# The challenge repository's requirements.txt (every record setup installs it) plus triton, which the CUDA torch
# wheel brings with it.
CHALLENGE_PACKAGES = frozenset({"torch", "numpy", "sentencepiece", "tqdm", "huggingface_hub", "kernels", "setuptools",
                                "typing_extensions", "datasets", "tiktoken", "triton"})
_DECODERS = {"b85decode": base64.b85decode, "b64decode": base64.b64decode, "a85decode": base64.a85decode}
_OPTIONAL_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}
# For code this Python cannot parse (e.g. PEP 701 f-strings of Python >= 3.12): imports found line by line.
_IMPORT_LINE = re.compile(r"(?:^|[;:])\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*(?:\s+as\s+\w+)?"
                          r"(?:\s*,\s*[A-Za-z_][\w.]*(?:\s+as\s+\w+)?)*))", re.M)


def _decompress(blob: bytes) -> bytes | None:
    for attempt in (lambda b: lzma.decompress(b),
                    lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}]),
                    zlib.decompress):
        try:
            return attempt(blob)
        except (lzma.LZMAError, zlib.error, ValueError):
            continue
    return None


def _payload(tree: ast.AST) -> str | None:
    """The source a self-extracting script execs: `<x>.decompress(<y>.b85decode("..."))` of a literal, decoded."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "decompress" and node.args):
            continue
        inner = node.args[0]
        if (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) and inner.func.attr in _DECODERS
                and inner.args and isinstance(inner.args[0], ast.Constant) and isinstance(inner.args[0].value, (str, bytes))):
            literal = inner.args[0].value
            try:
                blob = _DECODERS[inner.func.attr](literal.encode("ascii") if isinstance(literal, str) else literal)
            except ValueError:
                return None
            raw = _decompress(blob)
            if raw is not None:
                return raw.decode("utf-8", errors="replace")
    return None


_WRAPPER_LINES = 20  # a self-extracting script is a handful of lines around one long literal


def readable_source(text: str, depth: int = 3) -> str:
    """`text`, or the code it self-extracts (unwrapped up to `depth` times)."""
    for _ in range(depth):
        if "decompress(" not in text or text.count("\n") > _WRAPPER_LINES:
            return text
        try:
            inner = _payload(ast.parse(text))
        except SyntaxError:
            return text
        if inner is None:
            return text
        text = inner
    return text


def entry_scripts(folder: Path) -> list[Path]:
    """The scripts the record runs: train_gpt.py (else every train*.py), plus the local files they import or exec."""
    folder = Path(folder)
    start = [folder / "train_gpt.py"] if (folder / "train_gpt.py").is_file() else sorted(folder.glob("train*.py"))
    local = {p.stem: p for p in folder.glob("*.py")}
    found, todo = [], list(start)
    while todo:
        path = todo.pop(0)
        if path in found:
            continue
        found.append(path)
        for name in script_imports(path):
            if name.partition(".")[0] in local:
                todo.append(local[name.partition(".")[0]])
        text = script_text(path)
        for literal in re.findall(r"""["']([\w./-]+\.py)["']""", text):  # exec(open("...train_gpt_decode.py").read())
            named = folder / Path(literal).name
            if named.is_file() and named != path:
                todo.append(named)
    return found


@functools.lru_cache(maxsize=64)
def _script_text(path: Path, mtime_ns: int) -> str:
    return readable_source(path.read_text(encoding="utf-8", errors="replace"))


def script_text(path: Path) -> str:
    """A script's source as it runs (self-extraction undone), read once per version of the file."""
    return _script_text(Path(path), Path(path).stat().st_mtime_ns)


def script_imports(path: Path) -> dict[str, bool]:
    """{module: optional} of one script (self-extraction undone)."""
    return dict(_script_imports(Path(path), Path(path).stat().st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _script_imports(path: Path, mtime_ns: int) -> dict[str, bool]:
    text = _script_text(path, mtime_ns)
    try:
        return _imports(ast.parse(text))
    except SyntaxError:
        out: dict[str, bool] = {}
        for m in _IMPORT_LINE.finditer(text):
            names = [m.group(1)] if m.group(1) else [part.split()[0] for part in m.group(2).split(",")]
            out.update({name: False for name in names})
        return out


def _imports(tree: ast.AST, optional: bool | None = None) -> dict[str, bool]:
    """{module: optional} for every absolute import; optional = only inside `try: ... except ImportError`."""
    out: dict[str, bool] = {}

    def add(name: str, opt: bool) -> None:
        out[name] = out.get(name, True) and opt

    def visit(node: ast.AST, opt: bool) -> None:
        if isinstance(node, ast.Try):
            guarded = any(h.type is None or any(isinstance(e, ast.Name) and e.id in _OPTIONAL_ERRORS
                                                for e in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]))
                          for h in node.handlers)
            for child in node.body:
                visit(child, opt or guarded)
            for child in [*[c for h in node.handlers for c in h.body], *node.orelse, *node.finalbody]:
                visit(child, opt)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, opt)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            add(node.module, opt)
        for child in ast.iter_child_nodes(node):
            visit(child, opt)

    visit(tree, bool(optional))
    return out


def extra_packages(folder: Path) -> dict[str, list[str]]:
    """{top-level package: [scripts importing it]} for the non-optional imports a requirements.txt must cover."""
    folder = Path(folder)
    local = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    out: dict[str, list[str]] = {}
    for path in entry_scripts(folder):
        for name, optional in script_imports(path).items():
            top = name.partition(".")[0]
            if optional or top in sys.stdlib_module_names or top in CHALLENGE_PACKAGES or top in local or top == "__future__":
                continue
            out.setdefault(top, [])
            if path.name not in out[top]:
                out[top].append(path.name)
    return out


def mentions_cuda(folder: Path) -> bool:
    """Whether the record's scripts use CUDA (they cannot be re-run on a CPU as shipped)."""
    for path in entry_scripts(folder):
        text = script_text(path)
        if "cuda" in text or "flash_attn" in text or "nccl" in text:
            return True
    return False
