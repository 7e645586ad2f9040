"""Fetch the challenge's published FineWeb export (tokenized shards + tokenizer) from Hugging Face.

    python -m data.download --variant sp1024 --train-shards 10          # into ./data
    python -m data.download --variant sp1024 --train-shards 80 --out /fast/data

Remote layout (the challenge's `data/cached_challenge_fineweb.py`): in the dataset repo
`willdepueoai/parameter-golf` (env MATCHED_FINEWEB_REPO_ID), under the root folder `datasets`
(env MATCHED_FINEWEB_REMOTE_ROOT_PREFIX) lie `manifest.json`, `datasets/fineweb10B_<variant>/fineweb_{val,train}_XXXXXX.bin`
and the tokenizer files the manifest names (e.g. `tokenizers/fineweb_1024_bpe.model` and `.vocab`).
Shard counts come from the manifest.  Locally this writes `OUT/manifest.json`,
`OUT/datasets/fineweb10B_<variant>/` (all val shards + the first N train shards) and `OUT/tokenizers/`.

Files already present are kept when they check out (shards: valid header and the size the manifest
implies); every downloaded shard is validated with `read_header` before it is moved into place. A file is
replaced only if an earlier download put it there (OUT/.written.json, data.ledger.Ledger): a manifest or shard
of the user's own is refused, never overwritten or deleted. All network access goes through `_hub_download`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from data.ledger import Ledger, file_sha256
from data.shards import HEADER_BYTES, ShardFormatError, read_header
from data.writes import WouldOverwrite

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
DEFAULT_REMOTE_ROOT = "datasets"
DATASET_PREFIX = "fineweb10B_"  # dataset names are f"fineweb{VERSION}_{variant}" with VERSION "10B"
DEFAULT_TRAIN_SHARDS = 80  # 8B tokens, what the records train on
STAGING = ".download-staging"
TOOL = "python -m data.download"


class HubUnreachable(ConnectionError):
    """The Hugging Face hub could not be reached (no network, a proxy, HF_HUB_OFFLINE): nothing says a file is missing."""


def _hub_download(repo_id: str, filename: str, local_dir: Path) -> Path:
    """Download `filename` (a path inside the HF dataset repo) to `local_dir/filename`; return that path.

    The one place that touches the network; tests replace it.  Raises FileNotFoundError when the repo or
    the file does not exist, HubUnreachable when the hub cannot be asked.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    unreachable = (f"cannot reach the Hugging Face hub to fetch {filename} from {repo_id} (no network, a proxy, or "
                   "HF_HUB_OFFLINE set?); check the connection and rerun: files already downloaded are kept")
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset", local_dir=str(local_dir)))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):  # offline: LocalEntryNotFoundError subclasses EntryNotFoundError
        raise HubUnreachable(unreachable) from None
    except EntryNotFoundError:
        raise FileNotFoundError(f"{filename} not found in the Hugging Face dataset repo {repo_id}") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"Hugging Face dataset repo {repo_id} not found (or not public)") from None
    except OSError as e:  # connection errors of the HTTP client
        if isinstance(e, (PermissionError, FileNotFoundError, IsADirectoryError)) or e.errno == 28:
            raise
        raise HubUnreachable(f"{unreachable} ({type(e).__name__})") from None


@dataclass
class DownloadResult:
    dataset_dir: Path
    manifest_path: Path
    tokenizer_paths: list[Path]
    val_shards: list[Path]
    train_shards: list[Path]
    downloaded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def repo_settings(repo_id: str | None = None, remote_root: str | None = None) -> tuple[str, str]:
    """(repo id, remote root), from the arguments, else the env overrides, else the challenge's defaults."""
    repo = repo_id or os.environ.get("MATCHED_FINEWEB_REPO_ID") or DEFAULT_REPO_ID
    root = remote_root if remote_root is not None else os.environ.get("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", DEFAULT_REMOTE_ROOT)
    return repo, root.strip().strip("/")


def dataset_name(variant: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", variant):
        raise ValueError(f"bad variant {variant!r}; expected e.g. sp1024, sp4096, sp8192, byte260")
    return variant if variant.startswith(DATASET_PREFIX) else DATASET_PREFIX + variant


def expected_shard_tokens(n_files: int, total_tokens, shard_size) -> list[int | None]:
    """Token count of each shard of a split: full shards of `shard_size`, the last one holding the rest.

    Returns Nones when the manifest does not allow the computation (missing or inconsistent numbers).
    """
    try:
        n_files, total, size = int(n_files), int(total_tokens), int(shard_size)
    except (TypeError, ValueError):
        return [None] * int(n_files or 0)
    last = total - (n_files - 1) * size
    if n_files < 1 or size < 1 or not 0 < last <= size:
        return [None] * max(n_files, 0)
    return [size] * (n_files - 1) + [last]


def _shard_ok(path: Path, expected: int | None) -> str | None:
    """None if `path` is a valid shard of the expected token count, else what is wrong."""
    try:
        n = read_header(path)
    except ShardFormatError as e:
        return str(e)
    if expected is not None and n != expected:
        return f"{path}: {n} tokens, the manifest implies {expected} ({HEADER_BYTES + 2 * expected} bytes)"
    return None


class _Fetcher:
    def __init__(self, repo_id: str, remote_root: str, out: Path, log: Callable[[str], None], result_lists):
        self.repo_id, self.remote_root, self.out, self.log = repo_id, remote_root, out, log
        self.staging = out / STAGING
        self.ledger = Ledger(out, TOOL)
        self.downloaded, self.skipped, self.warnings = result_lists

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.log(f"warning: {msg}")

    def fetch(self, remote_rel: str) -> Path:
        """Download `<remote root>/<remote_rel>` into the staging folder; return the local file."""
        filename = _join(self.remote_root, remote_rel)
        self.staging.mkdir(parents=True, exist_ok=True)
        path = Path(_hub_download(self.repo_id, filename, self.staging))
        if not path.is_file():
            raise FileNotFoundError(f"download of {filename} from {self.repo_id} produced no file at {path}")
        return path

    def name(self, dest: Path) -> str:
        return dest.relative_to(self.out).as_posix()

    def place(self, src: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.ledger.expect(self.name(dest), file_sha256(src))  # before it is there: a kill in between still owns it
        if src.is_symlink():  # an HF cache symlink: materialize a real file
            shutil.copy2(src.resolve(strict=True), dest)
            src.unlink()
        else:
            os.replace(src, dest)
        self.downloaded.append(dest)

    def shard(self, remote_rel: str, dest: Path, expected: int | None) -> None:
        if dest.exists():
            problem = _shard_ok(dest, expected)
            if problem is None:
                self.skipped.append(dest)
                return
            if not self.ledger.owns(self.name(dest), exact=False):
                raise WouldOverwrite(f"{dest} is not a shard of this export ({problem}) and was not downloaded here; "
                                     "refusing to replace it: move it away (or use another --out) and rerun")
            self.warn(f"re-downloading {dest.name}: {problem}")
            dest.unlink()
        self.log(f"downloading {remote_rel}")
        src = self.fetch(remote_rel)
        problem = _shard_ok(src, expected)
        if problem is not None:
            src.unlink(missing_ok=True)
            raise ShardFormatError(f"downloaded {remote_rel} from {self.repo_id} is not a valid shard: {problem}")
        self.place(src, dest)

    def plain(self, remote_rel: str, dest: Path) -> None:
        if dest.is_file() and dest.stat().st_size > 0:
            self.skipped.append(dest)
            return
        self.log(f"downloading {remote_rel}")
        src = self.fetch(remote_rel)
        if src.stat().st_size == 0:
            src.unlink()
            raise ValueError(f"downloaded {remote_rel} from {self.repo_id} is empty")
        self.place(src, dest)


def _load_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path} is not readable JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} is not a JSON object")
    return data


def _tokenizer_local_path(out: Path, rel: str) -> Path:
    p = Path(rel)
    if not p.is_absolute() and ".." not in p.parts and p.parts[:1] == ("tokenizers",):
        return out / p
    return out / "tokenizers" / p.name


def download(
    variant: str = "sp1024",
    train_shards: int = DEFAULT_TRAIN_SHARDS,
    out: str | os.PathLike = "data",
    repo_id: str | None = None,
    remote_root: str | None = None,
    skip_manifest: bool = False,
    log: Callable[[str], None] | None = None,
) -> DownloadResult:
    """Download all val shards, the first `train_shards` train shards and the tokenizer of `variant`."""
    log = log or (lambda msg: print(f"[download] {msg}", flush=True))
    repo_id, remote_root = repo_settings(repo_id, remote_root)
    name = dataset_name(variant)
    train_shards = int(train_shards)
    if train_shards < 0:
        raise ValueError(f"train_shards must be >= 0, got {train_shards}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give the folder to download into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create --out {out} ({e.strerror}); choose another folder") from None
    result = DownloadResult(out / "datasets" / name, out / "manifest.json", [], [], [])
    f = _Fetcher(repo_id, remote_root, out, log, (result.downloaded, result.skipped, result.warnings))
    try:
        # 1. the manifest (always fetched again unless skip_manifest, so a stale local copy is noticed)
        local_manifest = result.manifest_path
        if skip_manifest:
            if not local_manifest.is_file():
                raise FileNotFoundError(f"--skip-manifest needs {local_manifest}; it does not exist (drop --skip-manifest)")
            manifest = _load_json(local_manifest, "manifest")
        else:
            log(f"fetching {_join(remote_root, 'manifest.json')} from {repo_id}")
            fresh = f.fetch("manifest.json")
            manifest = _load_json(fresh, "downloaded manifest")
            if local_manifest.is_file() and local_manifest.read_bytes() != fresh.read_bytes():
                if not f.ledger.owns("manifest.json", exact=False):
                    raise WouldOverwrite(f"{local_manifest} differs from the manifest of {repo_id}:{remote_root or '/'} and "
                                         "was not downloaded here (another export's?); refusing to replace it: use another "
                                         "--out, or move it away and rerun")
                f.warn(
                    f"{local_manifest} was stale (from another repo or an older export; now {repo_id}:{remote_root or '/'}); "
                    f"replacing it. Shards already in {out / 'datasets'} may belong to the old export: delete them if in doubt"
                )
            f.ledger.expect("manifest.json", file_sha256(fresh))
            os.replace(fresh, local_manifest)

        # 2. what to fetch, from the manifest
        entries = [d for d in manifest.get("datasets") or [] if isinstance(d, dict)]
        entry = next((d for d in entries if d.get("name") == name), None)
        if entry is None:
            names = ", ".join(sorted(str(d.get("name")) for d in entries)) or "none"
            hint = " (the local manifest may be stale: drop --skip-manifest)" if skip_manifest else ""
            raise ValueError(f"dataset {name} is not in the manifest of {repo_id}:{remote_root or '/'} (it has: {names}){hint}")
        stats = entry.get("stats") or {}
        try:
            files_val, files_train = int(stats["files_val"]), int(stats["files_train"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"manifest entry for {name} lacks stats.files_val / stats.files_train") from None
        if train_shards > files_train:
            raise ValueError(f"{variant} has only {files_train} train shards on {repo_id}, requested {train_shards}")
        shard_size = manifest.get("shard_size")
        exp_val = expected_shard_tokens(files_val, stats.get("tokens_val"), shard_size)
        exp_train = expected_shard_tokens(files_train, stats.get("tokens_train"), shard_size)
        tok_name = entry.get("tokenizer_name")
        tok_entry = next((t for t in manifest.get("tokenizers") or [] if isinstance(t, dict) and t.get("name") == tok_name), None)
        if tok_entry is None:
            raise ValueError(f"tokenizer {tok_name!r} of {name} is not in the manifest")
        tok_files = [str(tok_entry[k]) for k in ("model_path", "vocab_path", "path") if tok_entry.get(k)]
        if not tok_files:
            raise ValueError(f"manifest tokenizer entry {tok_name!r} names no files")

        stale = sorted(
            p for p in result.dataset_dir.glob("fineweb_*.bin")
            if (m := re.fullmatch(r"fineweb_(train|val)_(\d{6})\.bin", p.name))
            and int(m.group(2)) >= (files_train if m.group(1) == "train" else files_val)
        )
        if stale:
            f.warn(f"{len(stale)} shard(s) in {result.dataset_dir} are not part of this export (e.g. {stale[0].name}); "
                   "they are from another export: delete them, the trainers' globs would pick them up")

        # 3. shards, then the tokenizer
        remote_ds = _join("datasets", name)
        for split, count, expected, bucket in (
            ("val", files_val, exp_val, result.val_shards),
            ("train", train_shards, exp_train, result.train_shards),
        ):
            for i in range(count):
                fname = f"fineweb_{split}_{i:06d}.bin"
                dest = result.dataset_dir / fname
                f.shard(_join(remote_ds, fname), dest, expected[i] if i < len(expected) else None)
                bucket.append(dest)
        for rel in tok_files:
            remote_rel = rel if not Path(rel).is_absolute() else _join("tokenizers", Path(rel).name)
            dest = _tokenizer_local_path(out, rel)
            f.plain(remote_rel, dest)
            result.tokenizer_paths.append(dest)
        model = next((p for p in result.tokenizer_paths if p.suffix == ".model"), None)
        if model is not None:
            from data.export import check_tokenizer

            try:
                check_tokenizer(model, vocab_size=entry.get("vocab_size"))
            except (ValueError, OSError, RuntimeError) as e:
                f.warn(f"{model}: {e}")
    finally:
        shutil.rmtree(out / STAGING, ignore_errors=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data.download", description="Download the challenge's cached FineWeb shards and tokenizer.")
    p.add_argument("--variant", default="sp1024", help="tokenizer family: sp1024 (default), sp4096, sp8192, byte260, ...")
    p.add_argument("--train-shards", type=int, default=DEFAULT_TRAIN_SHARDS,
                   help=f"first N train shards of 10^8 tokens (default {DEFAULT_TRAIN_SHARDS}); all val shards are always fetched")
    p.add_argument("--out", default="data", help="local root: OUT/datasets/fineweb10B_<variant>/, OUT/tokenizers/, OUT/manifest.json")
    p.add_argument("--repo-id", default=None, help=f"HF dataset repo (default: $MATCHED_FINEWEB_REPO_ID or {DEFAULT_REPO_ID})")
    p.add_argument("--remote-root", default=None,
                   help=f"folder inside the repo (default: $MATCHED_FINEWEB_REMOTE_ROOT_PREFIX or {DEFAULT_REMOTE_ROOT!r}; '' for the repo root)")
    p.add_argument("--skip-manifest", action="store_true", help="use the local OUT/manifest.json instead of fetching it")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        r = download(args.variant, args.train_shards, args.out, args.repo_id, args.remote_root, args.skip_manifest)
    except (ValueError, FileNotFoundError, ShardFormatError, HubUnreachable, WouldOverwrite) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, an unwritable folder
        print(f"error: writing into {args.out} failed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("download: interrupted; the files already in place are complete and kept, rerun to fetch the rest",
              file=sys.stderr)
        return 130
    tokens = sum((p.stat().st_size - HEADER_BYTES) // 2 for p in r.val_shards + r.train_shards)
    print(f"[download] {len(r.val_shards)} val + {len(r.train_shards)} train shards ({tokens:,} tokens) in {r.dataset_dir}; "
          f"{len(r.downloaded)} downloaded, {len(r.skipped)} already present")
    for p in r.tokenizer_paths:
        print(f"[download] tokenizer file: {p}")
    model = next((p for p in r.tokenizer_paths if p.suffix == ".model"), None)
    print(f"[download] DATA_PATH={r.dataset_dir}" + (f" TOKENIZER_PATH={model}" if model else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
