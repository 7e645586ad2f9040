"""bootstrap.py (./run.sh, ./test.sh): which environment, what pip is asked to do, that a torch present is never
replaced, and that a second start skips pip. Fast tests fake pip; the slow one installs for real in a fresh venv."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bootstrap

ROOT = Path(__file__).resolve().parents[1]
KNOBS = {"DATA_PATH", "TOKENIZER_PATH", "RUN_ID", "SEED", "ITERATIONS", "MAX_WALLCLOCK_SECONDS", "DEVICE"}  # not inherited
REQS = "numpy\ntorch>=2.5\ngymnasium[box2d]>=1.0,<2  # a comment\nnot-on-this-python; python_version < '3.0'\n"


class FakePip:
    """Records pip's argument lists; `install torch==V` makes torch V installed, like the real one would."""

    def __init__(self, installed: dict[str, str]):
        self.installed, self.calls = installed, []

    def __call__(self, args):
        self.calls.append(args)
        if args[:1] == ["install"] and args[1].startswith("torch=="):
            self.installed["torch"] = args[1].split("==")[1] + "+cpu"
        elif args[:2] == ["install", "-r"]:
            self.installed.update({n: "1.0" for n in ("numpy", "gymnasium")})
            self.constraints = Path(args[args.index("-c") + 1]).read_text()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    installed: dict[str, str] = {}
    monkeypatch.setattr(bootstrap, "installed_version", installed.get)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(REQS)
    env = {"PARAMETER_GOLF_CACHE": str(tmp_path / "cache")}
    pip = FakePip(installed)
    return pip, reqs, env


def test_missing_torch_gets_the_pinned_wheel_then_requirements_with_it_pinned(fake):
    pip, reqs, env = fake
    note = bootstrap.ensure_requirements(reqs, env, pip)
    assert pip.calls[0] == ["install", "torch==2.13.0"]  # only torch, so its index cannot serve the rest
    assert pip.calls[1][:3] == ["install", "-r", str(reqs)] and "-c" in pip.calls[1]
    assert pip.constraints == "torch==2.13.0+cpu\n" and len(pip.calls) == 2
    assert "installed torch 2.13.0+cpu" in note


def test_present_torch_is_kept_and_pinned(fake):
    pip, reqs, env = fake
    pip.installed["torch"] = "2.5.1+cu124"  # a GPU user's CUDA build
    note = bootstrap.ensure_requirements(reqs, env, pip)
    assert [c[:2] for c in pip.calls] == [["install", "-r"]]  # never `install torch...`
    assert pip.constraints == "torch==2.5.1+cu124\n" and "kept torch 2.5.1+cu124" in note


def test_torch_index_url_and_pin_apply_to_torch_only(fake):
    pip, reqs, env = fake
    env.update(TORCH_INDEX_URL="https://example.invalid/whl/cpu", TORCH_PIN="torch==2.12.0")
    bootstrap.ensure_requirements(reqs, env, pip)
    assert pip.calls[0] == ["install", "torch==2.12.0", "--index-url", "https://example.invalid/whl/cpu"]
    assert "--index-url" not in pip.calls[1]


def test_second_start_skips_pip_until_requirements_or_packages_change(fake):
    pip, reqs, env = fake
    bootstrap.ensure_requirements(reqs, env, pip)
    pip.calls.clear()
    assert "up to date" in bootstrap.ensure_requirements(reqs, env, pip) and pip.calls == []
    del pip.installed["gymnasium"]  # uninstalled by hand: the stamp alone must not hide it
    bootstrap.ensure_requirements(reqs, env, pip)
    assert [c[:2] for c in pip.calls] == [["install", "-r"]]
    pip.calls.clear()
    reqs.write_text(REQS + "scipy\n")
    pip.installed["scipy"] = "1.0"
    bootstrap.ensure_requirements(reqs, env, pip)
    assert [c[:2] for c in pip.calls] == [["install", "-r"]]  # requirements.txt changed


def test_requirements_that_change_torch_are_refused(fake):
    pip, reqs, env = fake
    pip.installed["torch"] = "2.5.1+cu124"
    real = pip.__call__

    def swapping_pip(args):
        real(args)
        pip.installed["torch"] = "2.13.0"

    with pytest.raises(bootstrap.SetupError, match="changed torch from 2.5.1"):
        bootstrap.ensure_requirements(reqs, env, swapping_pip)


def test_requirement_names_apply_markers_and_extras():
    assert bootstrap.requirement_names(REQS) == ["numpy", "torch", "gymnasium"]
    assert bootstrap.requirement_names("-r other.txt\nnot a requirement!!\nscipy\n") == ["scipy"]  # pip names bad lines


def test_which_environment(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "prefix", "/x/venv")
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    assert bootstrap.active_env({}) == Path("/x/venv")  # inside a virtualenv: use it
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path))
    assert bootstrap.active_env({"CONDA_PREFIX": str(tmp_path), "CONDA_DEFAULT_ENV": "pg"}) == tmp_path
    assert bootstrap.active_env({"CONDA_PREFIX": str(tmp_path), "CONDA_DEFAULT_ENV": "base"}) is None
    assert bootstrap.active_env({}) is None  # a system python: make .venv


def test_outside_any_env_makes_venv_dir_and_continues_inside_it(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)
    made, ran = [], []
    monkeypatch.setattr(bootstrap, "create_venv", made.append)
    monkeypatch.setattr(bootstrap, "exec_or_run", lambda cmd: ran.append(cmd) or 0)
    assert bootstrap.enter_env("run", ["--help"], {"VENV_DIR": str(tmp_path / "v")}) == 0
    assert made == [tmp_path / "v"]
    assert ran == [[str(tmp_path / "v" / "bin" / "python"), str(ROOT / "bootstrap.py"), bootstrap.INSIDE, "run", "--help"]]


def test_pip_failure_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PARAMETER_GOLF_CACHE", str(tmp_path))
    monkeypatch.setattr(bootstrap, "installed_version", lambda name: None)

    def failing(args):
        raise bootstrap.SetupError("`pip install torch==2.13.0` failed (exit 1); see pip's message above")

    monkeypatch.setattr(bootstrap, "run_pip", failing)
    assert bootstrap.main([bootstrap.INSIDE, "setup"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: `pip install torch==2.13.0` failed")
    assert bootstrap.main(["nope"]) == 2


@pytest.mark.parametrize("script,command", [("run.sh", "run"), ("test.sh", "test")])
def test_scripts_hand_their_arguments_to_bootstrap(tmp_path, script, command):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "argv"}\n')
    (bin_dir / "python3").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    subprocess.run(["sh", str(ROOT / script), "-k", "a b"], env=env, check=True, cwd=tmp_path)
    assert (tmp_path / "argv").read_text().split() == [str(ROOT / "bootstrap.py"), command, "-k", "a", "b"]


# ---------- a real venv, a fake pip ----------

FAKE_PIP = r'''
import json, re, sys
from pathlib import Path
site = Path(__file__).resolve().parents[1]
args = sys.argv[1:]
with open(site / "pip_calls.jsonl", "a") as f:
    f.write(json.dumps(args) + "\n")

def installed(name, version):
    d = site / f"{name.replace('-', '_')}-{version}.dist-info"
    d.mkdir(exist_ok=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")

if args[:2] == ["install", "-r"]:
    for line in Path(args[2]).read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#")[0])
        if m and m.group(1) != "torch":  # the constraints pin the torch present
            installed(m.group(1), "0.0")
elif args[:1] == ["install"]:
    installed(*args[1].split("=="))
'''


def base_python() -> str:
    """An interpreter outside any virtualenv (the one this venv was made from), as on a bare machine."""
    return getattr(sys, "_base_executable", sys.executable) if sys.prefix != sys.base_prefix else sys.executable


def test_fresh_venv_then_second_start_without_pip(tmp_path):
    fake_site = tmp_path / "fake-site"
    (fake_site / "pip").mkdir(parents=True)
    (fake_site / "pip" / "__init__.py").write_text("")
    (fake_site / "pip" / "__main__.py").write_text(FAKE_PIP)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PYTHONHOME")}
    env.update(PYTHONPATH=str(fake_site), VENV_DIR=str(tmp_path / "venv"), PARAMETER_GOLF_CACHE=str(tmp_path / "cache"))
    python = base_python()
    had_torch = subprocess.run([python, "-c", "import importlib.metadata as m; m.version('torch')"], env=env).returncode == 0

    first = subprocess.run([python, str(ROOT / "bootstrap.py"), "setup"], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "include-system-site-packages = true" in (tmp_path / "venv" / "pyvenv.cfg").read_text()
    calls = [json.loads(line) for line in (fake_site / "pip_calls.jsonl").read_text().splitlines()]
    expected = [] if had_torch else [["install", "torch==2.13.0"]]
    assert calls[:-1] == expected and calls[-1][:3] == ["install", "-r", str(ROOT / "requirements.txt")]
    assert ("kept torch" if had_torch else "installed torch 2.13.0") in first.stderr

    start = time.perf_counter()
    second = subprocess.run([python, str(ROOT / "bootstrap.py"), "setup"], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "requirements up to date" in second.stderr, second.stderr
    assert len((fake_site / "pip_calls.jsonl").read_text().splitlines()) == len(calls)  # pip was not started again
    print(f"second start: {time.perf_counter() - start:.2f} s")


# ---------- the real thing ----------

@pytest.mark.slow
def test_fresh_checkout_installs_then_runs_and_tests(tmp_path):
    """A copy of the working tree and a bare virtualenv (no system packages): ./test.sh installs the pinned torch and
    the requirements for real, passes a test file, ./run.sh reaches the final exact line; the second start skips pip."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    repo = tmp_path / "repo"
    for rel in filter(None, files.decode().split("\0")):
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    venv = tmp_path / "venv"
    subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONDA_PREFIX", "CONDA_DEFAULT_ENV") and k not in KNOBS}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
               PARAMETER_GOLF_CACHE=os.environ.get("PARAMETER_GOLF_CACHE", str(Path.home() / ".cache" / "parameter-golf")))
    tests = subprocess.run(["./test.sh", "tests/test_bpb.py"], cwd=repo, env=env, capture_output=True, text=True, timeout=3000)
    assert tests.returncode == 0, tests.stdout[-2000:] + tests.stderr[-3000:]
    assert "installed torch 2.13.0" in tests.stderr and " passed" in tests.stdout
    run = subprocess.run(["./run.sh"], cwd=repo, env=dict(env, ITERATIONS="6", VAL_LOSS_EVERY="3", RUN_ID="fresh", OMP_NUM_THREADS="1"),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "final_int8_zlib_roundtrip_exact" in run.stdout and "run summary fresh" in run.stdout
    assert (repo / "logs" / "fresh.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    torch_before = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
                                  capture_output=True, text=True, check=True).stdout
    again = subprocess.run(["./test.sh", "--co", "-q", "tests/test_bpb.py"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "requirements up to date" in again.stderr and "pip install" not in again.stderr
    torch_after = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
                                 capture_output=True, text=True, check=True).stdout
    assert torch_before == torch_after



def test_a_venv_inside_the_repository_is_not_shipped(tmp_path, monkeypatch):
    """./run.sh makes .venv in the repository; modules loaded from there (setuptools' _distutils_hack is, through a .pth
    file) are installed packages, never project code to pack or count."""
    import importlib

    from records.bundle import shipped_sources

    (tmp_path / "train_gpt.py").write_text("import pkg\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    for env, module in ((".venv", "pg_hack_hidden"), ("venv", "pg_hack_plain")):
        site = tmp_path / env / "lib" / "python3" / "site-packages"
        site.mkdir(parents=True)
        (site / f"{module}.py").write_text("")
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setitem(sys.modules, module, importlib.import_module(module))  # loaded, as a .pth file would; undone after
    shipped = [p.relative_to(tmp_path.resolve()).as_posix() for p in shipped_sources(tmp_path, tmp_path / "train_gpt.py")]
    assert shipped == ["train_gpt.py", "pkg/__init__.py"]
