"""Version 1 of the packed train_gpt.py (records packed before the v2 format), kept so they still verify.

v1 embeds every source verbatim (all the modules a run could reach, lazily or not) under `_SOURCES`, then lzma
(preset 6) and base85 in a two-line wrapper. Nothing writes v1 any more; `records.bundle` reads it and checks that
a v1 file is reproducible from its own embedded sources with exactly these rules.
"""
from __future__ import annotations

import base64
import lzma

HEAD = b'import lzma,base64;_b=b"'
TAIL = b'"\nexec(lzma.decompress(base64.b85decode(_b)))\n'
SOURCES_VAR = "_SOURCES"
LZMA_PRESET = 6

# The runner that ends every v1 bundle, byte for byte as v1 wrote it.
BOOTSTRAP = '''
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


def bundle_text(sources: dict[str, str], entry: str, literal, module_name) -> str:
    modules = sorted(k for k in sources if k != entry)
    names = ", ".join(module_name(k) for k in modules) or "none"
    lines = [
        f'"""{entry} packed by `python -m records pack`: the trainer plus the project modules it ran with ({names}).',
        "Each source is embedded verbatim and registered under its import name at start-up, then the trainer runs as",
        f'__main__. Readable copies of the sources: python -m records unpack {entry} OUT_DIR"""',
        f"{SOURCES_VAR} = {{}}",
    ]
    for key in modules + [entry]:
        lines.append(f"{SOURCES_VAR}[{key!r}] = {literal(sources[key])}")
    return "\n".join(lines) + "\n" + BOOTSTRAP.replace("__ENTRY__", repr(entry))


def compress(text: str) -> bytes:
    return HEAD + base64.b85encode(lzma.compress(text.encode("utf-8"), preset=LZMA_PRESET)) + TAIL


def decompress(data: bytes) -> str:
    if not data.endswith(TAIL):
        raise ValueError("the file starts like a packed train_gpt.py but its self-extracting line is cut or edited")
    try:
        return lzma.decompress(base64.b85decode(data[len(HEAD) : -len(TAIL)])).decode("utf-8")
    except (ValueError, lzma.LZMAError) as e:
        raise ValueError(f"the compressed payload does not decode ({e})") from None
