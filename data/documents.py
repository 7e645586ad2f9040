"""Documents (strings) from any source the `datasets` library loads, in a fixed order, for data.export.

    iter_documents(["a.jsonl", "b.parquet"], text_field="text")        local files, in the order given
    iter_documents([], hf_dataset="HuggingFaceFW/fineweb", split="train", max_docs=1000)   a hub dataset, streamed

Local files by suffix: .jsonl/.ndjson/.json (JSON lines or a JSON array), .parquet, .arrow, .csv, and plain text
.txt/.text/.md, split into documents by `txt_split`: "blank" (paragraphs separated by whitespace-only lines),
"line" (one per non-blank line) or "file" (one per file). A folder written by `Dataset.save_to_disk` is read
with `datasets.load_from_disk`. Every source is streamed (no cache copy), row by row in file order; the
document is the row's `text_field`, which must exist and be a string. Bad inputs raise `DocumentError`, one
line naming the input and the fix.
"""
from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

TXT_SPLITS = ("blank", "line", "file")
BUILDERS = {  # suffix -> datasets builder
    ".jsonl": "json", ".ndjson": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow", ".csv": "csv",
    ".txt": "text", ".text": "text", ".md": "text",
}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")  # datasets decompresses these by suffix


class DocumentError(ValueError):
    """An input that cannot give documents: missing, unreadable, empty, unknown type, no such text field."""


def _quiet_datasets():
    """Import datasets with its progress bars and error logging off: our errors say what went wrong, once."""
    import datasets

    datasets.disable_progress_bars()
    logging.getLogger("datasets").setLevel(logging.CRITICAL)
    return datasets


def _builder(path: Path) -> str:
    name = path.name.lower()
    for comp in COMPRESSIONS:
        name = name.removesuffix(comp)
    builder = BUILDERS.get(Path(name).suffix)
    if builder is None:
        raise DocumentError(f"{path}: unsupported input type; use one of {', '.join(BUILDERS)} "
                            "(optionally compressed: .gz, .zst, ...) or a folder written by Dataset.save_to_disk")
    return builder


def check_input(path: Path) -> None:
    """Raise DocumentError unless `path` is a readable, non-empty input of a known type."""
    if path.is_dir():
        if not ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            raise DocumentError(f"{path} is a folder but not one written by Dataset.save_to_disk; "
                                "pass the data files inside it instead")
        return
    if not path.exists():
        raise DocumentError(f"input file not found: {path}")
    if not path.is_file():
        raise DocumentError(f"{path} is not a regular file")
    _builder(path)
    try:
        with open(path, "rb") as f:
            first = f.read(1)
    except OSError as e:
        raise DocumentError(f"cannot read {path} ({e.strerror}); check its permissions") from None
    if not first:
        raise DocumentError(f"{path} is empty; give a file that holds documents")


def _rows_of(path: Path, txt_split: str):
    datasets = _quiet_datasets()
    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise DocumentError(f"{path} holds the splits {sorted(ds)}; pass the folder of one split")
            ds = ds["train"]
        return ds
    builder = _builder(path)
    kwargs = {"sample_by": "document" if txt_split == "file" else "line"} if builder == "text" else {}
    return datasets.load_dataset(builder, data_files=[str(path)], split="train", streaming=True, **kwargs)


def _guarded(rows, origin: str) -> Iterator[dict]:
    """Rows of a datasets iterable; a parse or decode failure becomes one DocumentError naming `origin`."""
    it = iter(rows)
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except DocumentError:
            raise
        except Exception as e:  # pyarrow/datasets parse errors, UnicodeDecodeError, ...: name the input, keep one line
            detail = " ".join(str(e).split())[:300] or type(e).__name__
            raise DocumentError(f"{origin}: cannot read it ({detail}); check the file's format and encoding (UTF-8)") from None
        yield row


def _texts(rows: Iterable[dict], origin: str, text_field: str) -> Iterator[str]:
    for i, row in enumerate(rows, 1):
        if text_field not in row:
            fields = ", ".join(sorted(map(str, row))[:10]) or "none"
            raise DocumentError(f"{origin}: record {i} has no field {text_field!r} (fields: {fields}); "
                                "choose one with --text-field")
        text = row[text_field]
        if text is None:  # a field other records have: datasets fills it with None here
            fields = ", ".join(sorted(str(k) for k, v in row.items() if v is not None)[:10]) or "none"
            raise DocumentError(f"{origin}: record {i} has no field {text_field!r} (fields: {fields}); "
                                "every record needs the text field (choose it with --text-field)")
        if not isinstance(text, str):
            raise DocumentError(f"{origin}: record {i}: field {text_field!r} is {type(text).__name__}, not a string; "
                                "choose a text field with --text-field")
        yield text


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Group lines into documents separated by whitespace-only lines (txt_split="blank")."""
    for blank, group in itertools.groupby(lines, key=lambda line: not line.strip()):
        if not blank:
            yield "\n".join(group)


def _file_documents(path: Path, text_field: str, txt_split: str) -> Iterator[str]:
    origin = str(path)
    rows = _guarded(_rows_of(path, txt_split), origin)
    if path.is_dir() or _builder(path) != "text":
        yield from _texts(rows, origin, text_field)
        return
    texts = (row["text"] for row in rows)
    if txt_split == "blank":
        yield from _paragraphs(texts)
    else:
        yield from (t for t in texts if t.strip())


def _hub_documents(name: str, config: str | None, split: str, text_field: str) -> Iterator[str]:
    datasets = _quiet_datasets()
    origin = f"hub dataset {name}" + (f" ({config})" if config else "") + f" split {split}"
    try:
        rows = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:  # not found, offline, gated, bad split: one line
        detail = " ".join(str(e).split())[:300] or type(e).__name__
        raise DocumentError(f"cannot load {origin} ({detail}); check the name, --hf-config, --split and the network "
                            "(or export local files with --input)") from None
    yield from _texts(_guarded(rows, origin), origin, text_field)


def iter_documents(paths=(), text_field: str = "text", txt_split: str = "blank", *, hf_dataset: str | None = None,
                   hf_config: str | None = None, split: str = "train", max_docs: int | None = None) -> Iterator[str]:
    """Yield documents from local files (in the order given) or from `hf_dataset` (streamed), at most `max_docs`.
    Every local input is checked before the first document is yielded."""
    if txt_split not in TXT_SPLITS:
        raise DocumentError(f"txt_split must be one of {TXT_SPLITS}, got {txt_split!r}")
    files = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if bool(files) == bool(hf_dataset):
        raise DocumentError("give input files or a hub dataset name (--input FILE ... or --hf-dataset NAME), not both or neither")
    for path in files:
        check_input(path)
    if hf_dataset:
        docs = _hub_documents(hf_dataset, hf_config, split, text_field)
    else:
        docs = itertools.chain.from_iterable(_file_documents(p, text_field, txt_split) for p in files)
    yield from itertools.islice(docs, max_docs)


class DocumentSource:
    """A re-iterable view of `iter_documents(...)`: every `iter()` reads the inputs again from the start,
    skipping the first `skip` documents and yielding at most `limit`."""

    def __init__(self, paths, text_field: str = "text", txt_split: str = "blank", skip: int = 0, limit: int | None = None,
                 **source):
        self.paths, self.text_field, self.txt_split, self.source = paths, text_field, txt_split, source
        self.skip, self.limit = skip, limit

    def __iter__(self) -> Iterator[str]:
        it = iter_documents(self.paths, self.text_field, self.txt_split, **self.source)
        return itertools.islice(it, self.skip, None if self.limit is None else self.skip + self.limit)
