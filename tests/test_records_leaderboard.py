"""The leaderboard and the log reader on the metadata defects and naming variants real records have (HARNESS A6, A8)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from records.leaderboard import format_table, leaderboard
from records.logs import parse_log
from records.stats import significance

ROOT = Path(__file__).resolve().parents[1]


def make(root: Path, track: str, name: str, sub=None, logs: dict[str, str] | None = None, json_name="submission.json") -> Path:
    folder = root / track / name
    folder.mkdir(parents=True)
    if sub is not None:
        (folder / json_name).write_text(sub if isinstance(sub, str) else json.dumps(sub))
    for fname, text in (logs or {}).items():
        (folder / fname).write_text(text)
    return folder


def final(bpb: float, total: int = 15_000_000) -> str:
    return (f"Serialized model: 67000000 bytes\nCode size: 40000 bytes\nTotal submission size: 67040000 bytes\n"
            f"Serialized model int8+zlib: {total - 40000} bytes\nTotal submission size int8+zlib: {total} bytes\n"
            f"final_int8_zlib_roundtrip_exact val_loss:{bpb * 1.7:.8f} val_bpb:{bpb:.8f}\n")


def test_leaderboard_tolerates_metadata_defects(tmp_path):
    make(tmp_path, "track_10min_16mb", "2026-03-18_Good", {"name": "Good", "author": "ann", "date": "2026-03-18", "val_bpb": 1.20,
                                                           "bytes_total": 15_800_000, "seeds": [1, 2, 3]})
    # val_loss holds the bpb and there is no val_bpb: taken from the logs when there are some ...
    make(tmp_path, "track_10min_16mb", "2026-03-20_LossIsBpb", {"name": "LossIsBpb", "author": "bo", "val_loss": 1.14276},
         {"train.log": final(1.14276)})
    # ... and flagged when there are none.
    make(tmp_path, "track_10min_16mb", "2026-03-21_LossOnly", {"name": "LossOnly", "author": "cy", "val_loss": 1.19})
    make(tmp_path, "track_10min_16mb", "2026-03-19_MeanSpelling", {"name": "MeanSpelling", "author": "di", "mean_val_bpb": 1.17,
                                                                  "code_bytes": 50_000})
    make(tmp_path, "track_10min_16mb", "2026-03-19_smeargate_orthoinit", {"val_bpb": 1.18})  # no author, name or date
    make(tmp_path, "track_non_record_16mb", "2026-03-25_Ternary", {"name": "Ternary", "author": "ed", "val_bpb": 1.16,
                                                                   "track": "non_record_16mb"}, json_name="submission_ternary.json")
    make(tmp_path, "track_non_record_16mb", "2026-03-26_LogsOnly", None, {"train_seed1.log": final(1.30), "train_seed2.log": final(1.32)})
    make(tmp_path, "track_non_record_16mb", "2026-03-27_BrokenJson", "{not json", {"train.log": final(1.40)})
    make(tmp_path, "track_10min_16mb", "2026-03-19_Disagrees", {"name": "Disagrees", "author": "fy", "val_bpb": 1.1574},
         {"train.log": final(1.2154)})
    make(tmp_path, "track_10min_16mb", "2026-03-19_int6 STE QAT_ MLP", None, {"train.log": "step:1/10 train_loss:6.9\n"})

    entries = leaderboard(tmp_path)
    by_name = {e.name: e for e in entries}
    assert [e.name for e in entries][:6] == ["LossIsBpb", "Disagrees", "Ternary", "MeanSpelling", "smeargate_orthoinit", "LossOnly"]
    assert by_name["LossIsBpb"].bpb_source == "logs" and abs(by_name["LossIsBpb"].val_bpb - 1.14276) < 1e-9
    assert "bpb read from the val_loss field" in by_name["LossOnly"].notes
    assert by_name["MeanSpelling"].bpb_source == "json mean_val_bpb"
    smear = by_name["smeargate_orthoinit"]
    assert smear.author == "?" and smear.date == "2026-03-19" and "no author" in smear.notes
    assert by_name["Ternary"].track == "non_record_16mb" and "json is submission_ternary.json" in by_name["Ternary"].notes
    assert by_name["LogsOnly"].val_bpb == 1.31 and len(by_name["LogsOnly"].seed_bpbs) == 2
    assert by_name["LogsOnly"].bytes_total == 15_000_000
    assert any("does not parse" in n for n in by_name["BrokenJson"].notes) and by_name["BrokenJson"].val_bpb == 1.40
    assert "logs say 1.21540" in by_name["Disagrees"].notes
    assert entries[-1].name == "int6 STE QAT_ MLP" and entries[-1].val_bpb is None  # no score: listed last, not dropped
    table = format_table(entries)
    assert table.splitlines()[2].split()[:2] == ["1", "1.14276"] and "non-record" in table
    assert format_table(entries, markdown=True).startswith("| # | val_bpb |")


def test_leaderboard_cli(tmp_path):
    make(tmp_path, "track_10min_16mb", "2026-03-18_A", {"name": "A", "author": "x", "val_bpb": 1.25})
    make(tmp_path, "track_10min_16mb", "2026-03-19_B", {"name": "B", "author": "y", "val_bpb": 1.21})
    out = subprocess.run([sys.executable, "-m", "records", "leaderboard", "--root", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    lines = out.splitlines()
    assert "1.21000" in lines[2] and " B " in lines[2] and "1.25000" in lines[3]


def test_log_reader_takes_the_last_score_and_the_tagged_total():
    text = (
        "code_snapshot:train_gpt.py\n# ===== train_gpt.py =====\n"
        "final_int8_zlib_roundtrip_exact val_loss:0.1 val_bpb:0.1\nCode size: 1 bytes\nseed:99\n"  # source text, not metrics
        "\n" + "=" * 100 + "\nRunning Python 3.11\n"
        "seed:7\nworld_size:8 grad_accum_steps:1 device:cuda:0 backend:nccl\n"
        "step:100/200 val_loss:2.1 val_bpb:1.3 train_time:1000ms step_avg:10ms\n"
        "100/200 val_loss: 2.0 val_bpb: 1.25\n"
        "stopping_early: wallclock_cap train_time:599000ms step:150/200\n"
        "diagnostic quantized val_loss:2.05 val_bpb:1.22\n"
        "Serialized model: 67000000 bytes\nCode size: 47642 bytes\nTotal submission size: 67047642 bytes\n"
        "Serialized model int6+zstd: 15000000 bytes path:artifacts/x/final_model.int6.ptz\n"
        "Total submission size int6+zstd: 15047642 bytes\n"
        "final_int6_roundtrip_exact val_loss:1.95000000 val_bpb:1.20000000\n"
        "final_sliding_window_exact val_loss:1.90000000 val_bpb:1.18000000\n"
        "final_int8_zlib_roundtrip_exact val_loss:1.90000000 val_bpb:1.18000000\n"  # re-printed for old tools
        "quantized_ttt_phased val_loss: 1.80 val_bpb: 1.10\n"  # no _exact: a later, less precise line
    )
    log = parse_log(Path("x.log"), text)
    assert (log.score_name, log.val_bpb, log.val_loss, log.exact) == ("final_int8_zlib_roundtrip_exact", 1.18, 1.9, True)
    assert (log.total_tag, log.total_bytes, log.model_bytes, log.code_bytes) == ("int6+zstd", 15_047_642, 15_000_000, 47_642)
    assert log.artifact_path == "artifacts/x/final_model.int6.ptz"
    assert (log.seed, log.world_size, log.device, log.steps, log.train_time_ms) == (7, 8, "cuda:0", 150, 599000)
    new_format = parse_log(Path("y.log"), "1/10 train_loss: 7.0 train_time: 1m\nquantized_ttt_phased val_loss: 1.80 val_bpb: 1.10\n")
    assert (new_format.score_name, new_format.val_bpb, new_format.exact) == ("quantized_ttt_phased", 1.10, False)


def test_significance_rule_by_hand():
    cand, loss = [1.100, 1.102, 1.098], [1.90, 1.90, 1.90]
    s = significance(cand, loss, [1.130])
    margin = 0.005 * 1.100 / 1.90
    t = (1.100 - (1.130 - margin)) / (0.002 / 3 ** 0.5)  # one-sample t with sample std 0.002
    assert abs(s.margin_bpb - margin) < 1e-12 and abs(s.t_statistic - t) < 1e-6 and s.passes
    assert abs(s.gain_nats - 0.030 * 1.90 / 1.100) < 1e-9
    assert not significance(cand, loss, [1.100 + margin]).passes  # gain exactly the margin: not shown at p < 0.01
    assert not significance([1.100, 1.100], [1.9, 1.9], [1.2, 1.2]).passes  # zero spread: the t-test is undefined
