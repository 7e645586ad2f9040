"""Code bytes of the packed one-file train_gpt.py vs the sum of the sources it embeds.

    python -m bench.pack_size            # the sources a default run ships (train_gpt.py and its import closure)

Prints the sum of the sources, the readable bundle (sources + import hook), the shipped lzma+base85 file,
and the time packing takes (it runs inside every training run's size accounting).
"""
from __future__ import annotations

import time
from pathlib import Path

from records.bundle import bundle_source, import_closure, pack_sources, read_sources

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    entry = (ROOT / "train_gpt.py").resolve()
    paths = [entry] + sorted(import_closure(ROOT, [entry]) - {entry})
    sources = read_sources(paths, ROOT)
    t0 = time.perf_counter()
    shipped = pack_sources(sources)
    seconds = time.perf_counter() - t0
    total = sum(len(s.encode("utf-8")) for s in sources.values())
    readable = len(bundle_source(sources).encode("utf-8"))
    print(f"sources: {len(sources)} files, {total:,} bytes (train_gpt.py alone: {entry.stat().st_size:,})")
    for rel, src in sources.items():
        print(f"  {rel:<22} {len(src.encode('utf-8')):>7,}")
    print(f"readable bundle: {readable:,} bytes ({readable - total:+,} for the import hook and quoting)")
    print(f"shipped train_gpt.py (lzma + base85): {len(shipped):,} bytes = {len(shipped) / total:.1%} of the sources, "
          f"saves {total - len(shipped):,} bytes of the 16,000,000 budget; packed in {seconds:.2f} s")


if __name__ == "__main__":
    main()
