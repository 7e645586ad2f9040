"""records/bundle.py on a synthetic project: the flattened file behaves exactly like the sources, alone."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from records.bundle import (compress_bundle, bundle_source, import_closure, is_reproducible, pack_files, pack_sources,
                            read_sources, unpack)

FILES = {
    "pkg/__init__.py": '"""A package."""\nVERSION = "1"\n',
    # Same top-level names in two modules: each keeps its own namespace.
    "pkg/a.py": textwrap.dedent('''\
        from __future__ import annotations
        from dataclasses import dataclass

        def helper():
            return "a"

        @dataclass(frozen=True)
        class Point:
            x: int
            y: int = 2

        if __name__ == "__main__":
            import pkg.never  # a module's main block never runs inside the bundle, so this is not packed
            raise SystemExit("pkg.a's main block must not run when imported")
        '''),
    "pkg/b.py": textwrap.dedent('''\
        from .a import helper as helper_a

        def helper():
            return "b+" + helper_a()

        def boom():
            raise RuntimeError("boom")  # the traceback must show this line
        '''),
    "pkg/lazy.py": 'def value():\n    return "lazy"\n',
    "pkg/never.py": 'raise SystemExit("never imported")\n',
    "pkg/unused.py": "X = 1\n",
    # Quotes, backslashes and non-ASCII text that a naive raw-string embedding would corrupt.
    "pkg/quotes.py": "A = '''x'''\nB = \"\"\"y\"\"\"\nC = 'back\\\\'\nD = 'café ≥ 10 €'\n",
    "main.py": textwrap.dedent('''\
        """Entry docstring."""
        import sys
        from pkg.a import Point, helper
        from pkg import b
        import pkg.quotes as q

        def uses_lazy():
            from pkg.lazy import value
            return value()

        if __name__ == "__main__":
            print(helper(), b.helper(), Point(1), __doc__.strip(), q.A, q.B, q.C, q.D)
            if "inspect" in sys.argv:  # torch.compile / torch.jit read sources through inspect
                import inspect
                import pkg.a
                print(inspect.getsource(Point).splitlines()[1], len(inspect.getsource(pkg.a).splitlines()), inspect.getsource(uses_lazy).split("(")[0])
            if "lazy" in sys.argv:
                print(uses_lazy())
            if "boom" in sys.argv:
                b.boom()
        '''),
}


@pytest.fixture()
def project(tmp_path):
    root = tmp_path / "proj"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def run(script: Path, *args, cwd: Path, env_extra=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def shipped(root: Path) -> list[Path]:
    entry = root / "main.py"
    return [entry.resolve()] + sorted(import_closure(root, [entry]) - {entry.resolve()})


def test_closure_follows_lazy_and_relative_imports_but_not_main_blocks(project):
    rel = sorted(p.relative_to(project.resolve()).as_posix() for p in import_closure(project, [project / "main.py"]))
    assert rel == ["main.py", "pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/lazy.py", "pkg/quotes.py"]


@pytest.mark.parametrize("compress", [True, False])
def test_packed_file_runs_alone_like_the_sources(project, tmp_path, compress):
    expected = run(project / "main.py", "lazy", cwd=project)
    assert expected.returncode == 0, expected.stderr
    out = tmp_path / "elsewhere"
    out.mkdir()
    data = pack_files(shipped(project), project, compress=compress)
    (out / "main.py").write_bytes(data)
    got = run(out / "main.py", "lazy", cwd=out)
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected.stdout == "a b+a Point(x=1, y=2) Entry docstring. x y back\\ café ≥ 10 €\nlazy\n"
    if compress:
        assert data.count(b"\n") == 2 and data.startswith(b"import lzma,base64;") and len(data.splitlines()[1]) < 50


def test_inspect_reads_embedded_sources(project, tmp_path):
    (tmp_path / "main.py").write_bytes(pack_files(shipped(project), project))
    proc = run(tmp_path / "main.py", "inspect", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"class Point: {len(FILES['pkg/a.py'].splitlines())} def uses_lazy"


def test_traceback_shows_embedded_source_lines(project, tmp_path):
    (tmp_path / "main.py").write_bytes(pack_files(shipped(project), project))
    proc = run(tmp_path / "main.py", "boom", cwd=tmp_path)
    assert proc.returncode != 0
    assert 'raise RuntimeError("boom")  # the traceback must show this line' in proc.stderr
    assert "<packed>/pkg/b.py" in proc.stderr and len(proc.stderr) < 2000  # the compressed payload is never quoted


def test_unpacked_project_module_fails_loudly_instead_of_loading_from_disk(project, tmp_path):
    sources = read_sources(shipped(project), project)
    del sources["pkg/lazy.py"]
    (tmp_path / "main.py").write_bytes(pack_sources(sources, "main.py"))
    # The real pkg/lazy.py is importable from PYTHONPATH: the bundle must still refuse it, loudly.
    proc = run(tmp_path / "main.py", "lazy", cwd=tmp_path, env_extra={"PYTHONPATH": str(project)})
    assert proc.returncode != 0
    assert "ImportError: pkg.lazy is a project module that was not packed" in proc.stderr


def test_unpack_roundtrip_and_tamper_detection(project):
    sources = read_sources(shipped(project), project)
    for compress in (True, False):
        data = pack_sources(sources, "main.py", compress=compress)
        same, bundle = is_reproducible(data)
        assert same and bundle.entry == "main.py" and bundle.sources == sources and bundle.compressed == compress
    text = bundle_source(sources, "main.py")
    edited = compress_bundle(text.replace("_sys.meta_path.insert(0, _packed)", "pass"))
    assert not is_reproducible(edited)[0]
    with pytest.raises(ValueError, match="not a train_gpt.py made by"):
        unpack(b"print('hello')\n")
    with pytest.raises(ValueError, match="cut or edited"):
        unpack(pack_sources(sources, "main.py")[:-3])
