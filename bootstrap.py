"""Set up the Python environment of the two entry commands, then run them. Standard library only: it runs first.

    ./run.sh [ARGS]    # python3 bootstrap.py run [ARGS]:   python train_gpt.py ARGS (knobs as env vars)
    ./test.sh [ARGS]   # python3 bootstrap.py test [ARGS]:  python -m pytest -q -m "not slow" ARGS
    python3 bootstrap.py setup                             # only the set-up

The environment: the one you are in (a virtualenv, or a conda env other than base), else VENV_DIR (default .venv in
the repository), created with --system-site-packages so a torch installed system-wide (say a CUDA build) is seen
and kept. Then, only if no torch is installed, the pinned CPU-default torch (TORCH_PIN; TORCH_INDEX_URL picks the
wheel index); then requirements.txt, with the torch now present pinned by a constraints file so pip cannot swap or
upgrade it. pip is skipped when a stamp of (requirements.txt, interpreter, torch) matches and every listed package
is still installed, so the second run starts at once.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REQUIREMENTS = ROOT / "requirements.txt"
TORCH_PIN = "torch==2.13.0"  # installed only where no torch is; on PyPI's Linux index this is a CUDA build (see README)
COMMANDS = {
    "run": lambda args: ["train_gpt.py", *args],
    "test": lambda args: ["-m", "pytest", "-q", "-m", "not slow", *args],  # a later -m in ARGS wins (e.g. -m slow)
    "setup": None,
}
MIN_PYTHON = (3, 10)
INSIDE = "--inside-env"  # internal: the second stage, re-run by the environment's own interpreter


class SetupError(RuntimeError):
    """A set-up step that cannot go on; the message names the fix."""


def say(msg: str) -> None:
    print(f"[setup] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Stage 1 (any python): which environment


def active_env(environ=os.environ) -> Path | None:
    """The environment this interpreter belongs to, when it is one the user chose (venv, or a conda env but base)."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix)
    conda = environ.get("CONDA_PREFIX")
    if conda and Path(conda).resolve() == Path(sys.prefix).resolve() and environ.get("CONDA_DEFAULT_ENV") != "base":
        return Path(sys.prefix)
    return None


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def has_pip(python: str) -> bool:
    return subprocess.run([python, "-c", "import pip"], capture_output=True).returncode == 0


def create_venv(venv: Path, python: str = sys.executable, run=subprocess.run) -> None:
    """A venv that also sees the system's packages (a system torch stays the torch)."""
    say(f"creating {venv} (python {sys.version.split()[0]}, --system-site-packages: a system-wide torch is kept)")
    base = [python, "-m", "venv", "--system-site-packages"]
    if run([*base, str(venv)]).returncode == 0:
        return
    # Debian/Ubuntu without python3-venv have no ensurepip; the system's pip is visible through the system site.
    if has_pip(python) and run([*base, "--clear", "--without-pip", str(venv)]).returncode == 0:
        say(f"{venv}: no ensurepip here; using the system's pip inside it")
        return
    raise SetupError(f"cannot create a virtual environment at {venv} (`{python} -m venv` failed; on Debian/Ubuntu: "
                     "apt-get install python3-venv), or activate an environment of your own and run again")


def enter_env(command: str, args: list[str], environ=os.environ) -> int:
    """Stage 1: pick or make the environment, then continue inside it with its own interpreter."""
    if sys.version_info < MIN_PYTHON:
        raise SetupError(f"Python {sys.version.split()[0]} is too old: the harness needs {'.'.join(map(str, MIN_PYTHON))} or newer")
    if active_env(environ) is not None:
        return inside_env(command, args)
    venv = Path(environ.get("VENV_DIR") or ROOT / ".venv")
    python = venv_python(venv)
    if not python.is_file():
        create_venv(venv)
    return exec_or_run([str(python), str(Path(__file__).resolve()), INSIDE, command, *args])


# --------------------------------------------------------------------------------------------------
# Stage 2 (the environment's python): requirements


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def requirement_names(text: str) -> list[str]:
    """Distribution names that requirements.txt asks for on this interpreter (environment markers applied)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement
        except ImportError:
            Requirement = None
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        if Requirement is not None:
            try:
                req = Requirement(line)
            except ValueError:  # pip will name the bad line; the stamp decides meanwhile
                continue
            if req.marker is None or req.marker.evaluate():
                names.append(req.name)
        elif ";" not in line:  # no parser for markers here: the stamp alone covers those lines
            names.append(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0))
    return names


def stamp_path(environ=os.environ) -> Path:
    cache = Path(environ.get("PARAMETER_GOLF_CACHE") or Path.home() / ".cache" / "parameter-golf")
    return cache / "setup-stamps" / (hashlib.sha256(str(Path(sys.prefix).resolve()).encode()).hexdigest()[:16] + ".json")


def stamp_of(requirements: bytes, torch: str | None) -> dict:
    return {"requirements_sha256": hashlib.sha256(requirements).hexdigest(), "python": sys.executable,
            "prefix": str(Path(sys.prefix).resolve()), "torch": torch}


def run_pip(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    say(" ".join(["pip", *args]))
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise SetupError(f"`{' '.join(cmd)}` failed (exit {code}); see pip's message above")


def ensure_requirements(requirements: Path = REQUIREMENTS, environ=os.environ, pip=None) -> str:
    """Install what is missing into this interpreter's environment; returns a one-line account of what was done."""
    pip = pip or run_pip
    text = requirements.read_bytes()
    torch = installed_version("torch")
    stamp = stamp_path(environ)
    missing = [n for n in requirement_names(text.decode("utf-8")) if installed_version(n) is None]
    try:
        up_to_date = json.loads(stamp.read_text()) == stamp_of(text, torch) and not missing
    except (OSError, ValueError):
        up_to_date = False
    if up_to_date:
        return f"requirements up to date (torch {torch}; {stamp})"
    if torch is None:
        index = environ.get("TORCH_INDEX_URL")
        pip(["install", environ.get("TORCH_PIN") or TORCH_PIN, *(["--index-url", index] if index else [])])
        torch = installed_version("torch")
        if torch is None:
            raise SetupError("pip reported success but torch is still not installed; install a torch by hand and run again")
        done = f"installed torch {torch}"
    else:
        done = f"kept torch {torch}"
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text(f"torch=={torch}\n")  # the torch present is the torch: pip may not touch it
        pip(["install", "-r", str(requirements), "-c", str(constraints)])
    if installed_version("torch") != torch:
        raise SetupError(f"installing {requirements.name} changed torch from {torch} to {installed_version('torch')}")
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(stamp_of(text, torch)))
    except OSError as e:  # only costs a pip check next time
        say(f"could not write {stamp} ({e}); pip will check the requirements again next time")
    return f"{done}; requirements installed"


def inside_env(command: str, args: list[str]) -> int:
    say(ensure_requirements())
    if COMMANDS[command] is None:
        return 0
    os.chdir(ROOT)  # train_gpt.py's default paths and pytest.ini are relative to the repository
    return exec_or_run([sys.executable, *COMMANDS[command](args)])


def exec_or_run(cmd: list[str]) -> int:
    """Become `cmd` (its exit code and Ctrl-C are the user's); a plain child where exec is not available."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(cmd[0], cmd)
    return subprocess.run(cmd).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    inside = argv[:1] == [INSIDE]
    argv = argv[1:] if inside else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python3 bootstrap.py {{{','.join(COMMANDS)}}} [ARGS]\n\n{__doc__}", file=sys.stderr)
        return 2
    try:
        return inside_env(argv[0], argv[1:]) if inside else enter_env(argv[0], argv[1:])
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
