"""bench.claims: the recall task generator, the attention-free model, the seed statistics, run identity and
sharing, one real tiny LM run through sweep's store (resumed, not redone), and the reports from run records."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from bench.claims import recall
from bench.claims.data import Dataset
from bench.claims.lm import Arm, LMRun, Protocol, parse_metrics, record_path, run_lm
from bench.claims.lm_experiments import QUICK_KNOBS, coupled_arms, equal_param_arms, hwnode_arms, matched_relu2_mult
from bench.claims.stats import difference, mean_std
from arch.mlp import MixerConfig, mixer_param_count
from tests.tiny_data import TINY_VOCAB, build_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]


# ---------- the recall task ----------

@pytest.mark.parametrize("task", recall.TASKS)
@pytest.mark.parametrize("length", [16, 64, 128])
def test_every_scored_answer_is_recallable_from_the_context(task, length):
    cfg = recall.RecallConfig(task=task, length=length, keys=8, pairs=4)
    x, y, masks = recall.make_batch(cfg, 64, np.random.default_rng(0))
    seq = np.concatenate([x[:, :1], y], axis=1)  # the full sequences
    assert seq.shape == (64, length) and seq.min() >= 0 and seq.max() < cfg.vocab
    train, score = masks
    assert score.sum(1).tolist() == ([1] * 64 if task == "ar" else [cfg.pairs] * 64)
    assert not (score & ~train).any()  # everything scored is also trained on
    for b in range(64):
        for t in np.flatnonzero(train[b]):  # target y[b, t] = seq[b, t + 1] answers the key seq[b, t]
            key, value = seq[b, t], seq[b, t + 1]
            assert key < cfg.keys <= value < 2 * cfg.keys
            earlier = [j for j in range(t) if seq[b, j] == key and j % 2 == 0]
            assert earlier, "the answer's key must have occurred before"
            assert all(seq[b, j + 1] == value for j in earlier)  # one value per key within a sequence
        if task == "mqar":  # distinct keys first, then only queries and filler
            keys = seq[b, 0:2 * cfg.pairs:2]
            assert len(set(keys.tolist())) == cfg.pairs
            rest = seq[b, 2 * cfg.pairs:]
            assert set(rest.tolist()) <= set(keys.tolist()) | set(seq[b, 1:2 * cfg.pairs:2].tolist()) | {cfg.filler}


def test_maps_differ_between_sequences_and_bad_sizes_are_refused():
    cfg = recall.RecallConfig(task="mqar", length=64, keys=16, pairs=8)
    x, y, _ = recall.make_batch(cfg, 200, np.random.default_rng(1))
    first_pairs = {(int(x[b, 0]), int(x[b, 1])) for b in range(200)}
    assert len(first_pairs) > 50  # the key -> value map is drawn per sequence
    with pytest.raises(ValueError, match="pairs"):
        recall.make_batch(dataclasses.replace(cfg, length=16), 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="even"):
        recall.make_batch(dataclasses.replace(cfg, task="ar", length=63), 2, np.random.default_rng(0))


def test_attention_free_model_mixes_only_through_the_mlp_slot():
    cfg = recall.RecallConfig(dim=16, heads=2)
    torch.manual_seed(0)
    x = torch.randint(0, cfg.vocab, (2, 24))
    x2 = x.clone()
    x2[:, :10] = (x2[:, :10] + 1) % cfg.vocab  # change the past of position 12
    plain = recall.build_model("relu2", False, cfg).eval()
    assert not any(".attn." in n for n, _ in plain.named_parameters())  # only the (now idle) attn_scale gains remain
    with torch.no_grad():  # relu2 without attention: position t sees token t only
        assert torch.allclose(plain.forward_logits(x)[:, 12:], plain.forward_logits(x2)[:, 12:])
        for kind in ("s5", "hyena_s5", "wave"):
            m = recall.build_model(kind, False, cfg).eval()
            for p in m.parameters():  # zero-initialised output projections would hide the mixing
                torch.nn.init.normal_(p, std=0.2) if p.ndim == 2 else None
            a, b = m.forward_logits(x), m.forward_logits(x2)
            assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-5), kind  # the mixer carries the past
            x3 = x.clone()
            x3[:, 13:] = (x3[:, 13:] + 1) % cfg.vocab
            assert torch.allclose(a[:, :13], m.forward_logits(x3)[:, :13], atol=1e-5), kind  # and never the future


def test_attention_learns_an_easy_recall_and_the_attention_free_relu2_cannot():
    cfg = recall.RecallConfig(task="ar", length=16, keys=2, dim=16, heads=2, batch=32, steps=100, eval_sequences=256)
    r = recall.train_and_evaluate("relu2", True, cfg, seed=1)
    assert r["scored"] == 256 and math.isfinite(r["final_train_loss"])
    assert r["accuracy"] > 0.65  # 2 keys, 2 values: chance is 0.5 (measured 0.75-0.80 over seeds 0-2)
    blind = recall.train_and_evaluate("relu2", False, cfg, seed=1)
    assert blind["accuracy"] < 0.6  # no token mixing at all: it can only guess


# ---------- statistics ----------

def test_difference_matches_scipy_welch_and_paired():
    a = {1: 2.31, 2: 2.32, 3: 2.30}
    b = {1: 2.26, 2: 2.28, 3: 2.25}
    d = difference(a, b)
    assert d.diff == pytest.approx(np.mean(list(a.values())) - np.mean(list(b.values())))
    assert d.p_welch == pytest.approx(sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue)
    assert d.p_paired == pytest.approx(sps.ttest_rel([a[s] for s in a], [b[s] for s in a]).pvalue)
    assert d.ci_low < d.diff < d.ci_high and d.ci_low > 0  # clearly separated arms
    assert difference({1: 1.0, 2: 1.1}, {3: 1.0, 4: 1.2}).p_paired is None  # different seeds: no pairing
    assert math.isnan(difference({1: 1.0}, {1: 2.0}).p_welch)  # one seed: no test
    m, s = mean_std([1.0, 2.0, 3.0])
    assert (m, s) == (2.0, 1.0)  # sample std (ddof=1)


# ---------- arms, run identity ----------

def fake_dataset(tmp_path: Path) -> Dataset:
    (tmp_path / "manifest.json").write_text("{}")
    return Dataset("fake", tmp_path, tmp_path / "t.model", 1024)


def test_parameter_matching_and_equal_parameter_arms(tmp_path):
    p = Protocol(fake_dataset(tmp_path), steps=150)
    relu2, *hw = hwnode_arms(p)
    n = dict(hw[0].mixer)["hwnode_state_dim"]
    hw_count = mixer_param_count("hwnode", 128, 2.0, MixerConfig(hwnode_state_dim=n))
    assert abs(mixer_param_count("relu2", 128, relu2.mult) - hw_count) <= 128  # within one hidden unit (2d params)
    assert matched_relu2_mult(128, "hwnode", MixerConfig(hwnode_state_dim=n)) == relu2.mult
    counts = [mixer_param_count(a.kind, 128, a.mult, MixerConfig(**dict(a.mixer))) for a in equal_param_arms(p)]
    assert max(counts) / min(counts) < 1.01  # relu2, swiglu, wave, s5 within 1%


def test_run_ids_share_identical_configurations_and_split_different_ones(tmp_path):
    p = Protocol(fake_dataset(tmp_path), steps=150)
    relu2 = next(a for a in equal_param_arms(p) if a.name == "relu2")
    adam = next(a for a in coupled_arms(p) if a.name == "adam-0.05")
    coupled = next(a for a in coupled_arms(p) if a.name == "coupled-0.005")
    assert LMRun("mixers_lm", relu2, 1, p).spec().run_id == LMRun("coupled_adam", adam, 1, p).spec().run_id
    ids = {LMRun("x", a, s, p).spec().run_id for a in (adam, coupled) for s in (1, 2)}
    assert len(ids) == 4
    spec = LMRun("coupled_adam", coupled, 2, p).spec()
    knobs = dict(spec.knobs)
    assert knobs["EMBED_OPTIMIZER"] == "coupled_adam" and knobs["SEED"] == "2" and knobs["MAX_WALLCLOCK_SECONDS"] == "0"
    assert spec.to_json()["knobs"] == knobs  # the sweep's spec.json records them


def test_start_run_passes_the_runs_own_knobs_to_the_trainer(tmp_path):
    from sweep.runs import start_run

    trainer = tmp_path / "echo_env.py"
    trainer.write_text("import json, os\nopen('env.json', 'w').write(json.dumps(dict(os.environ)))\n")
    spec = LMRun("x", Arm("a", knobs=(("TIED_EMBED_LR", "0.01"),)), 7, Protocol(fake_dataset(tmp_path), steps=3)).spec()
    run = start_run(spec, tmp_path / "out", trainer, {"PATH": os.environ.get("PATH", "")})
    run.proc.wait(timeout=60)
    env = json.loads((run.folder / "env.json").read_text())
    assert env["TIED_EMBED_LR"] == "0.01" and env["SEED"] == "7" and env["RUN_ID"] == spec.run_id
    assert env["MODEL_DIM"] == "128" and env["MLP_KIND"] == "relu2"  # the shape still comes from the spec


def test_parse_metrics_reads_prequant_schemes_and_health():
    text = "\n".join([
        "mixer_params kind:relu2 layers:0,1 params_per_layer:4096 formula:4096 total:8192",
        "step:150/150 val_loss:3.6000 val_bpb:2.2500 train_time:1000ms step_avg:6.67ms",
        "embedding_health tok_emb.weight isotropy:0.3000 mean_norm_ratio:0.1500 mean_norm:0.7 row_norm:4.7000 max_row_norm:8.3000",
        "Serialized model int6+zstd: 12345 bytes path:x", "final_int6_zstd_roundtrip_exact val_loss:3.61 val_bpb:2.2600",
    ])
    m = parse_metrics(text, ("int6+zstd", "int5+zstd"))
    assert m["prequant_bpb"] == 2.25 and m["mixer_params"] == 4096 and m["step_avg_ms"] == 6.67
    assert m["schemes"]["int6+zstd"] == {"val_bpb": 2.26, "model_bytes": 12345}
    assert m["schemes"]["int5+zstd"] == {"val_bpb": None, "model_bytes": None}
    assert m["embedding_health"]["tok_emb.weight"]["isotropy"] == 0.3


# ---------- one real tiny run through the store, resumed ----------

def test_tiny_lm_run_is_recorded_with_every_scheme_and_not_redone(tmp_path):
    data, tok = build_tiny_dataset(tmp_path / "tiny")
    ds = Dataset("tiny", data, tok, TINY_VOCAB)
    p = Protocol(ds, steps=2, layers=1, dim=32, heads=2, kv_heads=1, schemes=("int8+zlib", "int6+zstd"),
                 knobs=QUICK_KNOBS + (("TRAIN_SEQ_LEN", "32"), ("TRAIN_BATCH_TOKENS", "512")))
    runs = [LMRun("exp_a", Arm("relu2"), 1, p), LMRun("exp_b", Arm("same-config"), 1, p)]
    seen = []
    run_lm(runs, tmp_path / "out", jobs=1, on_record=seen.append, log=lambda _: None)
    rec = json.loads(record_path(tmp_path / "out", runs[0]).read_text())
    assert rec["status"] == "ok", rec["note"]
    assert rec["steps"] == 2 and rec["prequant_bpb"] > 0 and rec["data"]["name"] == "tiny"
    assert all(v["val_bpb"] > 0 and v["model_bytes"] > 0 for v in rec["schemes"].values())
    assert rec["run_id"] == json.loads(record_path(tmp_path / "out", runs[1]).read_text())["run_id"]  # run once
    assert len((tmp_path / "out" / "store" / "results.jsonl").read_text().splitlines()) == 1
    assert sorted(seen) == ["exp_a", "exp_b"]
    record_path(tmp_path / "out", runs[1]).unlink()  # a record lost after the store got its row: rewritten, not rerun
    run_lm(runs, tmp_path / "out", jobs=1, log=lambda _: None)
    assert record_path(tmp_path / "out", runs[1]).is_file()
    assert len((tmp_path / "out" / "store" / "results.jsonl").read_text().splitlines()) == 1


def test_a_failed_lm_run_is_run_again(tmp_path, monkeypatch):
    """As in sweep's run_all, a run the store records as failed is pending: a rerun of the study retries it."""
    import bench.claims.lm as lm
    from sweep.runs import ResultStore

    data, tok = build_tiny_dataset(tmp_path / "tiny")
    p = Protocol(Dataset("tiny", data, tok, TINY_VOCAB), steps=2, layers=1, dim=32, heads=2, kv_heads=1,
                 schemes=("int8+zlib",), knobs=QUICK_KNOBS)
    run = LMRun("exp_a", Arm("relu2"), 1, p)
    started = []
    monkeypatch.setattr(lm, "run_all", lambda specs, *a, **k: started.extend(s.run_id for s in specs))
    monkeypatch.setattr(lm, "run_environment", lambda: {})
    monkeypatch.setattr(lm, "run_record", lambda run, row, store: dict(row))
    row = {**run.spec().to_json(), "val_bpb": 2.0, "val_loss": 3.0, "total_bytes": 1000, "note": ""}
    ResultStore(tmp_path / "out" / "store").append(dict(row, status="ok"))
    run_lm([run], tmp_path / "out", jobs=1, log=lambda _: None)
    assert started == []  # recorded ok: nothing to run
    ResultStore(tmp_path / "out" / "store").append(dict(row, status="failed", note="boom"))
    run_lm([run], tmp_path / "out", jobs=1, log=lambda _: None)
    assert started == [run.spec().run_id]


# ---------- reports from records ----------

def lm_record(exp, arm, seed, bpb, order=0, **extra):
    return {"experiment": exp, "arm": arm, "order": order, "seed": seed, "status": "ok", "note": "", "run_id": f"{arm}{seed}",
            "data": {"name": "wikitext2-sp1024", "fingerprint": "abc"}, "kind": "relu2", "shape": {"tie": True},
            "knobs": {}, "params": 1000, "steps": 150, "train_time_ms": 1, "wall_s": 1, "curve": [], "mixer_params": 100,
            "prequant_bpb": bpb - 0.01, "prequant_loss": 3.0, "step_avg_ms": 500.0, "arm_note": "",
            "schemes": {s: {"val_bpb": bpb + i * 0.01, "model_bytes": 1000 - i} for i, s in
                        enumerate(("int8+zlib", "int6+zstd", "int5+zstd"))},
            "embedding_health": {"tok_emb.weight": {"isotropy": 0.3, "mean_norm_ratio": 0.1, "row_norm": 4.0,
                                                    "max_row_norm": 8.0}}, **extra}


def write_records(out: Path, exp: str, records: list[dict]) -> None:
    (out / exp / "runs").mkdir(parents=True)
    for i, r in enumerate(records):
        (out / exp / "runs" / f"{r['arm']}__seed{r['seed']}__{i}.json").write_text(json.dumps(r))


def test_report_only_rebuilds_tables_csv_and_plots(tmp_path):
    out = tmp_path / "study"
    write_records(out, "coupled_adam", [lm_record("coupled_adam", a, s, b + 0.01 * s, i) for i, (a, b) in
                                        enumerate([("adam-0.05", 2.25), ("coupled-0.005", 2.38)]) for s in (1, 2, 3)])
    write_records(out, "hwnode_quant", [lm_record("hwnode_quant", a, s, 2.3 + 0.001 * s, i) for i, a in
                                        enumerate(["relu2-matched", "hwnode-v1"]) for s in (1, 2, 3)])
    write_records(out, "recall", [{"experiment": "recall", "arm": arm, "seed": s, "status": "ok", "task": t, "length": L,
                                   "params": 10, "accuracy": acc, "train_seconds": 1.0, "steps": 5, "run_id": "",
                                   "data": {"name": "synthetic", "fingerprint": "x"},
                                   "config": dataclasses.asdict(recall.RecallConfig())}
                                  for arm, acc in (("attention", 0.9), ("s5-noattn", 0.1)) for t in recall.TASKS
                                  for L in (64, 128) for s in (1, 2, 3)])
    from bench.claims.__main__ import main

    assert main(["--out", str(out), "--report-only", "--only", "coupled_adam,hwnode_quant,recall"]) == 0
    md = (out / "coupled_adam" / "summary.md").read_text()
    assert "| coupled-0.005 | 1,2,3 |" in md and "+0.1300" in md  # the difference of means vs adam-0.05
    assert "2.2700 ± 0.0100" in md  # adam-0.05: mean ± sample std of 2.26, 2.27, 2.28
    for exp, png in (("coupled_adam", "coupled_adam.png"), ("hwnode_quant", "hwnode_quant.png"), ("recall", "recall.png")):
        assert (out / exp / png).read_bytes()[:4] == b"\x89PNG"
        assert (out / exp / "summary.csv").read_text().count("\n") >= 2
        assert (out / exp / "runs.csv").read_text().count("\n") == len(list((out / exp / "runs").glob("*.json"))) + 1
    recall_md = (out / "recall" / "summary.md").read_text()
    assert "| attention | 10 | 0.900 | 0.900 |" in recall_md and "T=64 | T=128" in recall_md
    bad = subprocess.run([sys.executable, "-m", "bench.claims", "--out", str(tmp_path / "empty"), "--report-only"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "no run records" in bad.stderr and "Traceback" not in bad.stderr


def test_allocation_pareto_and_second_seed_choice():
    from bench.claims.allocation import pareto, top_points

    pts = [{"name": n, "bytes": b, "bpb": v} for n, b, v in (("a", 100, 2.0), ("b", 90, 2.1), ("c", 110, 2.05), ("d", 80, 2.2))]
    assert [p["name"] for p in pareto(pts)] == ["d", "b", "a"]
    rows = [{"status": "ok", "share_target": s, "expansion": e, "val_bpb": v} for s, e, v in
            ((0.15, 2.0, 2.0), (0.25, 2.0, 2.1), (0.35, 3.0, 2.2), (0.45, 4.0, 2.3), (0.15, 2.66, 2.4), (0.25, 2.66, 2.5))]
    assert top_points(rows) == [(0.15, 2.0), (0.25, 2.0), (0.35, 3.0), (0.15, 2.66)]  # the 3 best, then the best e=2.66
    rows[4]['val_bpb'] = 1.9  # an e=2.66 point among the best is not picked twice
    assert top_points(rows) == [(0.15, 2.66), (0.15, 2.0), (0.25, 2.0)]


@pytest.mark.slow
def test_quick_study_runs_every_experiment_end_to_end(tmp_path):
    """`python -m bench.claims --quick`: every experiment, tiny models, 2 seeds, then --report-only gives the same tables."""
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.claims", "--quick", "--out", str(out), "--jobs", "2"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tables = {}
    for exp in ("hwnode_quant", "recall", "mixers_lm", "coupled_adam", "allocation"):
        assert list((out / exp / "runs").glob("*.json")), exp
        tables[exp] = (out / exp / "summary.md").read_text()
        assert list((out / exp).glob("*.png")), exp
    assert (out / "coupled_adam" / "probe.json").is_file() and (out / "mixers_lm" / "step_times.json").is_file()
    again = subprocess.run([sys.executable, "-m", "bench.claims", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "sweep: start" not in again.stdout  # resumed: nothing left to run
    for exp, text in tables.items():
        assert (out / exp / "summary.md").read_text() == text, exp


RESULTS = ROOT / "bench" / "results"


@pytest.mark.parametrize("exp", ["hwnode_quant", "recall", "mixers_lm", "coupled_adam", "allocation"])
def test_committed_tables_are_what_the_report_makes_of_the_committed_runs(exp, tmp_path):
    """bench/results/<exp>/summary.md is regenerated from bench/results/<exp>/runs/*.json (plots skipped here)."""
    import shutil

    from bench.claims import report

    src = RESULTS / exp
    if not (src / "runs").is_dir():
        pytest.skip(f"no committed results for {exp}")
    shutil.copytree(src, tmp_path / exp)
    text = report.write(exp, tmp_path, plots=False)
    assert text + "\n" == (src / "summary.md").read_text()
    assert (tmp_path / exp / "summary.csv").read_text() == (src / "summary.csv").read_text()
