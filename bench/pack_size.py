"""Code bytes of the packed one-file train_gpt.py a record of a run ships, and what each packing step saves.

    python -m bench.pack_size                          # the default run (no knobs set)
    python -m bench.pack_size TTT_ENABLED=1 MLP_KIND=s5 # another configuration's record

Prints the modules the configuration ships (train_gpt.optional_modules + module-level imports) with their source
and compact sizes, the shipped v2 file, and for comparison the same modules in the v1 format (verbatim, base85)
and the v1 record of everything train_gpt.py can reach (what records shipped before v2), with packing times.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    bad = [a for a in argv if "=" not in a]
    if bad:
        print(f"bench.pack_size: {bad[0]!r} is not KNOB=VALUE; pass knobs as e.g. TTT_ENABLED=1", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from records.bundle import compact_sources, import_closure, pack_files, pack_sources, read_sources, shipped_sources
    from train_gpt import Hyperparameters, KnobError, optional_modules

    env = dict(a.split("=", 1) for a in argv)
    try:
        args = Hyperparameters(env=env, device_type="cpu")
    except KnobError as e:
        print(f"bench.pack_size: {e}", file=sys.stderr)
        return 2
    entry = ROOT / "train_gpt.py"
    modules = optional_modules(args)
    paths = shipped_sources(ROOT, entry, modules)
    sources = read_sources(paths, ROOT)
    compact = compact_sources(sources)
    t0 = time.perf_counter()
    shipped = pack_files(paths, ROOT)
    seconds = time.perf_counter() - t0
    print(f"configuration: {' '.join(argv) or '(defaults)'}; optional modules: {', '.join(modules) or 'none'}")
    for rel in sources:
        print(f"  {rel:<22} {len(sources[rel].encode('utf-8')):>7,} source  {len(compact[rel].encode('utf-8')):>7,} compact")
    total, small = (sum(len(s.encode("utf-8")) for s in d.values()) for d in (sources, compact))
    print(f"{len(sources)} files: {total:,} bytes of source, {small:,} compact")
    print(f"shipped train_gpt.py (records-pack v2): {len(shipped):,} bytes, packed in {seconds:.2f} s")
    print(f"  the same modules in v1 (verbatim, lzma + base85): {len(pack_sources(sources, 'train_gpt.py', version=1)):,} bytes")
    from arch.mlp import MIXER_MODULES  # imported by name (importlib), so the closure is told about them

    mixers = [ROOT / (m.replace(".", "/") + ".py") for m in sorted(set(MIXER_MODULES.values()))]
    everything = [entry.resolve()] + sorted(import_closure(ROOT, [entry, *mixers]) - {entry.resolve()})
    print(f"  v1 of all {len(everything)} modules train_gpt.py can reach (records before v2): "
          f"{len(pack_sources(read_sources(everything, ROOT), 'train_gpt.py', version=1)):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
