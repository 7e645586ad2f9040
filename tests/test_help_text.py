"""Examples in docstrings and --help must work on any machine: no absolute path of the machine they were written on."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|root|home|Users|mnt|scratch)/")  # /tmp and relative paths are fine


def help_texts(path: Path) -> list[str]:
    """The module docstring and every argparse help=/default= string of a source file (read, not imported)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    texts = [ast.get_docstring(tree) or ""]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("add_argument", "ArgumentParser", "add_parser"):
            texts += [kw.value.value for kw in node.keywords
                      if kw.arg in ("help", "default", "description", "epilog") and isinstance(kw.value, ast.Constant)
                      and isinstance(kw.value.value, str)]
    return texts


def test_no_machine_specific_paths_in_help():
    sources = [p for p in ROOT.rglob("*.py") if not {"tests", ".venv", "records"} & set(p.relative_to(ROOT).parts[:1])]
    sources += list((ROOT / "records").glob("*.py"))  # the tooling, not the packed record folders
    bad = [f"{p.relative_to(ROOT)}: {m.group(0)}... in {t[:60]!r}" for p in sources for t in help_texts(p) if (m := MACHINE_PATH.search(t))]
    assert not bad, bad


def test_rl_compare_help_shows_a_relative_out(capsys):
    from rl.compare import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--out rl-results" in out and not MACHINE_PATH.search(out)
