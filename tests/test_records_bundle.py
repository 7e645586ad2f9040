"""records/bundle.py on a synthetic project: the flattened file behaves exactly like the sources, alone."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from records.bundle import (compact_sources, compress_bundle, bundle_source, format_version, import_closure, is_reproducible,
                            pack_files, pack_sources, read_sources, shipped_sources, unpack)
from records.compact import compact_source, embeds

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
    if compress:  # v2: a latin-1 payload; the exec line a traceback quotes is short
        assert data.startswith(b"#coding:latin-1\n_b=") and len(data.splitlines()[-1]) < 60 and format_version(data) == 2


def test_inspect_reads_embedded_sources(project, tmp_path):
    (tmp_path / "main.py").write_bytes(pack_files(shipped(project), project))
    proc = run(tmp_path / "main.py", "inspect", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    embedded = compact_source(FILES["pkg/a.py"])  # what the bundle embeds: the module without comments or docstrings
    assert proc.stdout.splitlines()[-1] == f"class Point: {len(embedded.splitlines())} def uses_lazy"


def test_traceback_shows_embedded_source_lines(project, tmp_path):
    (tmp_path / "main.py").write_bytes(pack_files(shipped(project), project))
    proc = run(tmp_path / "main.py", "boom", cwd=tmp_path)
    assert proc.returncode != 0
    assert 'raise RuntimeError("boom")' in proc.stderr and "line 7, in boom" in proc.stderr
    assert "<packed>/pkg/b.py" in proc.stderr and len(proc.stderr) < 2000  # the compressed payload is never quoted


def test_unpacked_project_module_fails_loudly_instead_of_loading_from_disk(project, tmp_path):
    sources = read_sources(shipped(project), project)
    del sources["pkg/lazy.py"]
    (tmp_path / "main.py").write_bytes(pack_sources(sources, "main.py"))
    # The real pkg/lazy.py is importable from PYTHONPATH: the bundle must still refuse it, loudly.
    proc = run(tmp_path / "main.py", "lazy", cwd=tmp_path, env_extra={"PYTHONPATH": str(project)})
    assert proc.returncode != 0
    assert proc.stderr.startswith("error: pkg.lazy is not packed into this train_gpt.py") and "Traceback" not in proc.stderr


def test_unpack_roundtrip_and_tamper_detection(project):
    sources = compact_sources(read_sources(shipped(project), project))
    for compress in (True, False):
        data = pack_sources(sources, "main.py", compress=compress)
        same, bundle = is_reproducible(data)
        assert same and bundle.entry == "main.py" and bundle.sources == sources and bundle.compressed == compress
        assert bundle.version == 2
    text = bundle_source(sources, "main.py")
    edited = compress_bundle(text.replace("_sys.meta_path.insert(0, _packed)", "pass"))
    assert not is_reproducible(edited)[0]
    with pytest.raises(ValueError, match="not a train_gpt.py made by"):
        unpack(b"print('hello')\n")
    with pytest.raises(ValueError, match="cut or edited"):
        unpack(pack_sources(sources, "main.py")[:-3])


# --------------------------------------------------------------------------------------------------
# The v2 format: compact sources, a latin-1 payload, only the modules a run imports


def test_compact_source_keeps_the_program_and_drops_what_never_runs():
    src = textwrap.dedent('''\
        """Module doc, read below."""
        from __future__ import annotations
        from dataclasses import dataclass

        @dataclass
        class Knobs:
            """Class doc."""
            lr: float = 0.1  # a field: its annotation must stay

        def f(x: int, *rest: str, flag: bool = True) -> int:
            """Function doc."""
            # a comment
            return x + len(rest)

        def only_doc():
            """Nothing but a doc."""

        HELP = __doc__
        ''')
    out = compact_source(src)
    assert "Module doc" in out and "Class doc" not in out and "Function doc" not in out and "# a comment" not in out
    assert "lr: float = 0.1" in out and "def f(x, *rest, flag=True):" in out and embeds(src, out) and compact_source(out) == out
    ns: dict = {}
    exec(compile(out, "m", "exec"), ns)
    assert ns["f"](1, "a") == 2 and ns["Knobs"]().lr == 0.1 and ns["only_doc"]() is None and ns["HELP"] == "Module doc, read below."
    assert not embeds(src, out.replace("x + len(rest)", "x - len(rest)"))  # any change of the program is seen


def test_compact_drops_help_texts_and_local_annotations_but_nothing_that_runs():
    """help= texts are documentation (a record's --help lists knobs without them); a local variable's annotation is
    never evaluated; a bare local annotation (it makes the name local) and class fields stay."""
    src = textwrap.dedent('''
        from dataclasses import dataclass

        @dataclass
        class Knob:
            name: str
            help: str = ""

        KNOBS = [Knob("LR", help="learning rate"), Knob("SEED", help=f"seed {1 + 1}"), Knob("N", "positional stays")]

        def f(n: int) -> list:
            out: list[int] = []
            total: int
            @dataclass
            class P:
                x: int = 1
            for i in range(n):
                acc: float = i * 2.0
                out.append(acc)
            return out, P().x
        ''')
    out = compact_source(src)
    assert "learning rate" not in out and "seed " not in out and "positional stays" in out and 'help=""' in out
    assert "out = []" in out and "acc = i * 2.0" in out and "total: int" in out and "x: int = 1" in out
    assert embeds(src, out) and compact_source(out) == out
    ns: dict = {}
    exec(compile(out, "m", "exec"), ns)
    assert [k.help for k in ns["KNOBS"]] == ["", "", "positional stays"] and ns["f"](3) == ([0.0, 2.0, 4.0], 1)


def test_every_v2_file_ends_with_the_same_runner():
    """The runner is part of a v2 file's bytes: if it followed changes to the compactor (or to ast.unparse across
    Python versions), files packed earlier would no longer reproduce. It is the readable bootstrap, compacted."""
    from records.bundle import _BOOTSTRAP

    text = bundle_source({"train_gpt.py": "print(1)\n"}, "train_gpt.py")
    runner = text[text.index("import importlib.abc"):].replace(repr("train_gpt.py"), "__ENTRY__")
    assert hashlib.sha256(runner.encode()).hexdigest() == "b5b8216046fb9d2a51c1390930da424884374d0808aefaf51aba19753f4af2fe"
    assert embeds(_BOOTSTRAP, runner)


def test_compact_strings_use_double_quotes_where_that_keeps_their_value():
    src = "a = 'x'\nb = f'{a!r} y'\nc = f'{a!r} \"q\"'\nd = ['k', f'{a}' + 'z']\n"
    out = compact_source(src)
    assert 'a = "x"' in out and 'd = ["k",' in out and embeds(src, out)
    if sys.version_info < (3, 12):  # 3.12+ tokenizes an f-string in parts: left as ast.unparse prints it
        assert 'b = f"{a!r} y"' in out and """c = f'{a!r} "q"'""" in out
    ns: dict = {}
    exec(compile(out, "m", "exec"), ns)
    assert (ns["b"], ns["c"], ns["d"]) == ("'x' y", "'x' \"q\"", ["k", "xz"])


def test_every_project_module_compacts_to_the_same_program():
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        src = path.read_text(encoding="utf-8")
        out = compact_source(src)
        assert embeds(src, out) and compact_source(out) == out, path


def test_shipped_sources_are_what_the_run_imports(tmp_path):
    """Module-level imports ship; lazy ones only when the run names them; a builder never ships."""
    root = tmp_path / "proj"
    files = {"main.py": "import pkg.core\n\ndef later():\n    import pkg.extra\n", "pkg/__init__.py": "", "pkg/core.py": "X = 1\n",
             "pkg/extra.py": "from pkg import core\n", "data/__init__.py": "", "data/sample.py": "Y = 2\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    rel = lambda paths: [p.relative_to(root.resolve()).as_posix() for p in paths]  # noqa: E731
    assert rel(shipped_sources(root, root / "main.py")) == ["main.py", "pkg/__init__.py", "pkg/core.py"]
    assert rel(shipped_sources(root, root / "main.py", ["pkg.extra"])) == ["main.py", "pkg/__init__.py", "pkg/core.py", "pkg/extra.py"]
    with pytest.raises(ValueError, match="never ships in a record"):
        shipped_sources(root, root / "main.py", ["data.sample"])
    (root / "pkg" / "core.py").write_text("from data.sample import Y\n")
    with pytest.raises(ValueError, match="pkg/core.py imports data.sample at module level, but data.sample never ships"):
        shipped_sources(root, root / "main.py")
    with pytest.raises(ValueError, match="does not exist"):
        shipped_sources(root, root / "main.py", ["pkg.missing"])


def test_v2_payload_survives_every_byte_value(tmp_path):
    """NUL, CR, backslash, quotes (three in a row), NUL before a digit: the literal decodes to the exact bytes, from
    the file as Python reads it."""
    import random

    from records.bundle import _HEAD, _TAIL, _escape

    rng = random.Random(0)
    for n in range(40):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(2000))) + bytes(rng.choice(
            [[0, 0x37], [0x22, 0x22, 0x22], [0x5C], [0x0D, 0x0A], [0x22], [0], [0x5C, 0x22]]))
        blob = bytes([0x22] * (n % 4)) + blob  # quotes right after the opening ones
        data = _HEAD + _escape(blob) + _TAIL
        path = tmp_path / f"f{n}.py"
        path.write_bytes(data)
        compile(path.read_bytes(), str(path), "exec")  # Python itself accepts the file
        assert ast_literal(path).encode("latin-1") == blob


def ast_literal(path: Path) -> str:
    import ast

    from quant.size import source_text

    return ast.parse(source_text(path)).body[0].value.value


def test_v1_record_still_reads_and_reproduces():
    """Records packed before v2 (verbatim sources, base85) stay verifiable: the fixture is the committed example's
    train_gpt.py as the v1 packer wrote it (before the example was re-packed in v2)."""
    data = (Path(__file__).resolve().parent / "fixtures" / "v1_record_train_gpt.py.txt").read_bytes()
    assert format_version(data) == 1
    same, bundle = is_reproducible(data)
    assert same and bundle.version == 1 and "data/export.py" in bundle.sources  # v1 shipped every reachable module


# --------------------------------------------------------------------------------------------------
# `records unpack`: nothing outside DIR, nothing replaced without --force


def _crafted(tmp_path: Path, key: str) -> Path:
    text = bundle_source({key: "X = 1\n", "main.py": "print(1)\n"}, "main.py")
    path = tmp_path / "crafted.py"
    path.write_bytes(compress_bundle(text))
    return path


def _unpack_cli(*args, cwd=None):
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(root)
    return subprocess.run([sys.executable, "-m", "records", "unpack", *map(str, args)], cwd=cwd or root, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("key", ["../evil.py", "/tmp/evil_abs.py", "pkg/../../evil.py", "pkg\\\\..\\\\evil.py", "evil.txt"])
def test_unpack_refuses_keys_that_leave_dir(tmp_path, key):
    crafted = _crafted(tmp_path, key)
    with pytest.raises(ValueError, match="only plain relative .py paths"):
        unpack(crafted.read_bytes())
    out = tmp_path / "out"
    proc = _unpack_cli(crafted, out)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "evil.py").exists() and not Path("/tmp/evil_abs.py").exists()


def test_unpack_never_overwrites_without_force_and_never_follows_links(project, tmp_path):
    packed = tmp_path / "main_packed.py"
    packed.write_bytes(pack_files(shipped(project), project))
    out = tmp_path / "out"
    proc = _unpack_cli(packed, out)
    assert proc.returncode == 0 and (out / "pkg" / "a.py").is_file()
    (out / "pkg" / "a.py").write_text("# my edits\n")
    proc = _unpack_cli(packed, out)
    assert proc.returncode == 2 and "already exist" in proc.stderr and "--force" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "pkg" / "a.py").read_text() == "# my edits\n"  # nothing the user made is lost
    assert _unpack_cli(packed, out, "--force").returncode == 0 and "my edits" not in (out / "pkg" / "a.py").read_text()
    outside = tmp_path / "outside"
    outside.mkdir()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "pkg").symlink_to(outside, target_is_directory=True)
    proc = _unpack_cli(packed, linked, "--force")
    assert proc.returncode == 2 and "symbolic link" in proc.stderr and list(outside.iterdir()) == []
    (tmp_path / "afile").write_text("x")
    proc = _unpack_cli(packed, tmp_path / "afile")
    assert proc.returncode == 2 and "is a file" in proc.stderr
    proc = _unpack_cli(tmp_path / "missing.py", out)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
