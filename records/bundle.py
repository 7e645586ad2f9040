"""Flatten train_gpt.py and the project modules it imports into ONE self-contained train_gpt.py.

Design: every source is embedded verbatim as a string, keyed by its path relative to the repository root.
At start-up a small import hook (a `sys.meta_path` finder) registers each one under its import name, so
`from arch.gpt import GPT`, lazy imports inside functions and relative imports all resolve to the embedded
copy and never to files on disk; each module keeps its own namespace, so names that clash between modules
cannot collide, and a module's `if __name__ == "__main__":` block stays inert (its __name__ is its import
name). Then train_gpt.py runs as __main__. Nothing is renamed or concatenated, so the flattening cannot
change what the code means. A project import that was not packed fails loudly (ImportError naming it)
instead of silently falling back to a copy found on sys.path.

The readable bundle is then compressed (lzma, base85 text, the records' two-line self-extracting form):
the bytes of that file are the code bytes that count against the 16,000,000-byte cap. `unpack` recovers
the verbatim sources without executing anything. This module imports only the standard library, so the
trainer's size accounting (quant/size.py) can call `packed_size` without importing train_gpt.
"""
from __future__ import annotations

import ast
import base64
import lzma
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

ENTRY = "train_gpt.py"
NOT_SHIPPED = frozenset({"tests", "records"})  # tooling folders: never imported by a run, never packed
# Compression used for the shipped file; `readable` bundles are for inspection and tests.
LZMA_PRESET = 6  # lzma default; 9 and 9e gave no smaller output on our ~100 KB of sources
# Two lines, so a traceback through the wrapper quotes the short exec line, not the whole payload.
_WRAP_HEAD = b'import lzma,base64;_b=b"'
_WRAP_TAIL = b'"\nexec(lzma.decompress(base64.b85decode(_b)))\n'
_SOURCES_VAR = "_SOURCES"

# The runner that ends every bundle. Kept short because it is counted, and free of names a trainer might use.
_BOOTSTRAP = '''
import importlib.abc as _abc, importlib.util as _util, linecache as _lc, sys as _sys


class _PackedModules(_abc.MetaPathFinder, _abc.Loader):
    """Serves the embedded sources as modules; claims their top-level names so nothing leaks in from disk."""

    def __init__(self, sources):
        self.files = {}
        for path, source in sources.items():
            parts = path[:-3].split("/")
            package = parts[-1] == "__init__"
            self.files[".".join(parts[:-1] if package else parts)] = (path, package)
        for name in list(self.files):  # parent packages without an __init__.py become empty packages
            while "." in name:
                name = name.rpartition(".")[0]
                self.files.setdefault(name, (None, True))
        self.sources = sources
        self.roots = {name.partition(".")[0] for name in self.files}

    def find_spec(self, name, path=None, target=None):
        if name in self.files:
            return _util.spec_from_loader(name, self, origin="<packed>/" + str(self.files[name][0]), is_package=self.files[name][1])
        if name.partition(".")[0] in self.roots:
            raise ImportError(f"{name} is a project module that was not packed into this train_gpt.py (packing found no import "
                              f"of it); import it by a literal name so `records pack` sees it, then re-pack", name=name)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        path = self.files[module.__name__][0]
        if path is not None:
            module.__file__ = "<packed>/" + path  # not on disk; inspect and tracebacks find the source in linecache
            exec(self.compile(path), module.__dict__)

    def compile(self, path):
        source, filename = self.sources[path], "<packed>/" + path
        _lc.cache[filename] = (len(source), None, source.splitlines(True), filename)  # tracebacks show real lines
        return compile(source, filename, "exec", dont_inherit=True)


_packed = _PackedModules(_SOURCES)
_sys.meta_path.insert(0, _packed)
if _sys.excepthook is _sys.__excepthook__:  # the C hook reads lines from disk; the traceback module reads linecache
    import traceback as _tb
    _sys.excepthook = _tb.print_exception
exec(_packed.compile(__ENTRY__), globals())
'''


@dataclass(frozen=True)
class Bundle:
    sources: dict[str, str]  # relative path -> verbatim source, entry included
    entry: str
    compressed: bool


def module_name(rel_path: str) -> str:
    """'arch/gpt.py' -> 'arch.gpt'; 'arch/__init__.py' -> 'arch'."""
    parts = rel_path[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# --------------------------------------------------------------------------------------------------
# Which sources ship


def _resolve(root: Path, name: str) -> Path | None:
    """The project file that module `name` is (a.b -> a/b.py or a/b/__init__.py), or None if not ours."""
    if not name or name.partition(".")[0] in NOT_SHIPPED:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _is_main_guard(node: ast.AST) -> bool:
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
            and len(t.comparators) == 1 and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value == "__main__")


class Import(NamedTuple):
    name: str  # absolute dotted name
    lazy: bool  # inside a function: runs only if that function is called
    from_item: bool  # the `b` of `from a import b`: a submodule a.b or just a name defined in a


def imported_names(source: str, module: str, is_package: bool, skip_main_guard: bool) -> list[Import]:
    """Every import in `source`, in function bodies too.

    `from a import b` lists both a and a.b (b may be a submodule); constant importlib.import_module("x") and
    __import__("x") calls count as imports. A non-entry module's `if __name__ == "__main__":` block is skipped:
    it never runs when the module is imported.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        if skip_main_guard and _is_main_guard(node):
            return
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, lazy, False) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append(Import(base, lazy, False))
            found.extend(Import(f"{base}.{alias.name}" if base else alias.name, lazy, True) for alias in node.names if alias.name != "*")
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id == "__import__"))):
            found.append(Import(node.args[0].value, lazy, False))
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source), False)
    return found


def bundle_imports(sources: dict[str, str], entry: str) -> list[tuple[str, Import]]:
    """(relative path, import) for every import of every embedded source, as they run inside a bundle."""
    out = []
    for rel, src in sources.items():
        module = "__main__" if rel == entry else module_name(rel)
        out += [(rel, imp) for imp in imported_names(src, module, rel.endswith("/__init__.py"), skip_main_guard=rel != entry)]
    return out


def _module_of(root: Path, path: Path) -> tuple[str, bool]:
    rel = path.relative_to(root).as_posix()
    return module_name(rel), rel.endswith("/__init__.py")


def import_closure(root: Path, start: list[Path]) -> set[Path]:
    """Every project source reachable from `start` through imports (lazy ones included), parents packages too."""
    root = root.resolve()
    entry = start[0].resolve()
    todo, seen = [p.resolve() for p in start], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        module, is_package = _module_of(root, path) if path != entry else ("__main__", False)
        for imp in imported_names(path.read_text(encoding="utf-8"), module, is_package, skip_main_guard=path != entry):
            parts = imp.name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
                found = _resolve(root, ".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def shipped_sources(root: Path, entry: Path) -> list[Path]:
    """The entry, then (sorted) every project module that ships with it: the ones imported so far in this process
    plus every one its imports can reach, so a record never depends on which code path a run happened to take
    (e.g. whether the sample dataset was cached). Tooling (tests/, records/) is left out."""
    root, entry = root.resolve(), entry.resolve()
    loaded = set()
    for module in list(sys.modules.values()):
        f = getattr(module, "__file__", None)
        if not f or not Path(f).is_absolute():  # torch.ops reports a bare '_ops.py'; never ours
            continue
        p = Path(f).resolve()
        parts = p.relative_to(root).parts if p.is_relative_to(root) else ()
        # an environment made inside the repository (.venv/, venv/: ./run.sh makes .venv) holds no project code
        installed = any(d.startswith(".") or d in ("site-packages", "dist-packages") for d in parts[:-1])
        if p.suffix == ".py" and parts and not NOT_SHIPPED & set(parts) and not installed:
            loaded.add(p)
    found = import_closure(root, [entry, *sorted(loaded)]) - {entry}
    return [entry] + sorted(found)


# --------------------------------------------------------------------------------------------------
# Packing


def _literal(source: str) -> str:
    """A Python literal for `source`: a raw triple-quoted string when that reproduces it exactly, else repr()."""
    for quote in ("'''", '"""'):
        candidate = f"r{quote}{source}{quote}"
        try:
            if ast.literal_eval(candidate) == source:
                return candidate
        except (SyntaxError, ValueError):
            pass
    return repr(source)


def read_sources(paths: list[Path], root: Path | None = None) -> dict[str, str]:
    """{relative path: source} for the entry (first path) and the modules; `root` defaults to the entry's folder."""
    paths = [Path(p).resolve() for p in paths]
    root = (root or paths[0].parent).resolve()
    sources = {}
    for p in paths:
        if not p.is_relative_to(root):
            raise ValueError(f"{p} is outside {root}; only the project's own modules can be packed")
        rel = p.relative_to(root).as_posix()
        if not rel.endswith(".py"):
            raise ValueError(f"{rel} is not a .py source; only Python modules can be packed")
        sources[rel] = p.read_bytes().decode("utf-8")
    return sources


def bundle_source(sources: dict[str, str], entry: str = ENTRY) -> str:
    """The readable one-file bundle: a header, every source verbatim, then the runner."""
    if entry not in sources:
        raise ValueError(f"the entry {entry} is not among the sources {sorted(sources)}")
    modules = sorted(k for k in sources if k != entry)
    names = ", ".join(module_name(k) for k in modules) or "none"
    lines = [
        f'"""{entry} packed by `python -m records pack`: the trainer plus the project modules it ran with ({names}).',
        "Each source is embedded verbatim and registered under its import name at start-up, then the trainer runs as",
        f'__main__. Readable copies of the sources: python -m records unpack {entry} OUT_DIR"""',
        f"{_SOURCES_VAR} = {{}}",
    ]
    for key in modules + [entry]:
        lines.append(f"{_SOURCES_VAR}[{key!r}] = {_literal(sources[key])}")
    return "\n".join(lines) + "\n" + _BOOTSTRAP.replace("__ENTRY__", repr(entry))


def compress_bundle(text: str) -> bytes:
    """The self-extracting form the records use: exec(lzma(base85))."""
    blob = base64.b85encode(lzma.compress(text.encode("utf-8"), preset=LZMA_PRESET))
    return _WRAP_HEAD + blob + _WRAP_TAIL


def pack_sources(sources: dict[str, str], entry: str = ENTRY, compress: bool = True) -> bytes:
    text = bundle_source(sources, entry)
    return compress_bundle(text) if compress else text.encode("utf-8")


def pack_files(paths: list[Path], root: Path | None = None, compress: bool = True) -> bytes:
    """The bytes of the one-file train_gpt.py made from `paths` (entry first, as quant.size.project_sources lists them)."""
    sources = read_sources(paths, root)
    return pack_sources(sources, next(iter(sources)), compress)


def packed_size(paths: list[Path], root: Path | None = None) -> int:
    """Code bytes a record ships for these sources: the size of the packed, compressed train_gpt.py.

    The hook quant/size.py calls so the trainer's `Code size` / `Total submission size` lines count exactly the
    file `python -m records pack` writes.
    """
    return len(pack_files(paths, root))


def is_packed(data: bytes) -> bool:
    return data.startswith(_WRAP_HEAD)


def unpack(data: bytes) -> Bundle:
    """Recover the embedded sources from a packed file without executing it; ValueError if it is not one."""
    compressed = data.startswith(_WRAP_HEAD)
    if compressed:
        if not data.endswith(_WRAP_TAIL):
            raise ValueError("the file starts like a packed train_gpt.py but its self-extracting line is cut or edited")
        try:
            text = lzma.decompress(base64.b85decode(data[len(_WRAP_HEAD) : -len(_WRAP_TAIL)])).decode("utf-8")
        except (ValueError, lzma.LZMAError) as e:
            raise ValueError(f"the compressed payload does not decode ({e})") from None
    else:
        text = data.decode("utf-8")
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise ValueError(f"not valid Python ({e})") from None
    sources: dict[str, str] = {}
    entry = None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript)
                and isinstance(node.targets[0].value, ast.Name) and node.targets[0].value.id == _SOURCES_VAR):
            sources[ast.literal_eval(node.targets[0].slice)] = ast.literal_eval(node.value)
            entry = ast.literal_eval(node.targets[0].slice)  # the entry is embedded last
    if not sources:
        raise ValueError("no embedded sources found: this is not a train_gpt.py made by `python -m records pack`")
    return Bundle(sources=sources, entry=entry, compressed=compressed)


def is_reproducible(data: bytes) -> tuple[bool, Bundle]:
    """Whether packing the embedded sources again gives these exact bytes (so nothing was edited by hand)."""
    bundle = unpack(data)
    return pack_sources(bundle.sources, bundle.entry, bundle.compressed) == data, bundle
