"""`records verify`'s audit runs the record's OWN shipped code, isolated, against this checkout's checks: a record
packed from a modified checkout, one shipping a modified evaluator, one whose logged score is not what its
artifact scores, one whose stored audit result was edited, and a smoke run whose eval knobs would not fit the
smoke window. Records not in our packed format are skipped with the reason."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from records.bundle import pack_sources, unpack
from records.compact import readable
from records.pack import collect, write_record
from records.rerun import AUDIT_FILE, audit_check, smoke_check, smoke_knobs, write_audit
from tests.tiny_data import build_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1", TRAIN_SEQ_LEN="32", TRAIN_BATCH_TOKENS="512",
            VAL_BATCH_SIZE="4096", VOCAB_SIZE="512", ITERATIONS="3", MAX_WALLCLOCK_SECONDS="0", TRAIN_LOG_EVERY="1",
            WARMDOWN_ITERS="2", DEVICE="cpu", EVAL_BATCH_SEQS="4")
EXAMPLE = ROOT / "records" / "track_non_record_16mb" / "2026-11-26_cpu_default_3seeds"


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """A real one-seed tiny run of this checkout, packed with its artifact (pack writes audit.json)."""
    tmp = tmp_path_factory.mktemp("hostile-run")
    data = build_tiny_dataset(tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE")}
    env.update(TINY, DATA_PATH=str(data[0]), TOKENIZER_PATH=str(data[1]), SEED="1", RUN_ID="s1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "train_gpt.py")], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = write_record(collect([tmp / "logs" / "s1.txt"], ROOT), name="tiny", author="t", github_id="t", track="non-record",
                          date="2026-01-02", out_root=tmp_path_factory.mktemp("records"), copy_artifacts=True)
    return data, folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / folder.name
    shutil.copytree(folder, dst)
    return dst


def sub_of(folder: Path) -> dict:
    return json.loads((folder / "submission.json").read_text())


def repacked(folder: Path, path: str, old: str, new: str) -> None:
    """The record's packed file, rebuilt from sources where `path` has `old` replaced by `new`."""
    bundle = unpack((folder / "train_gpt.py").read_bytes())
    sources = dict(bundle.sources, **{path: readable(bundle.sources[path])})  # four spaces a level, as people edit
    assert old in sources[path], (path, old)
    sources[path] = sources[path].replace(old, new, 1)
    (folder / "train_gpt.py").write_bytes(pack_sources(sources, bundle.entry))


def test_pack_records_the_audit_and_verify_reruns_it(record, monkeypatch):
    data, folder = record
    stored = json.loads((folder / AUDIT_FILE).read_text())
    assert stored["command"].startswith("python -m eval.audit --record train_gpt.py --artifact seed1_final_model.int8.ptz --preset cpu")
    assert set(stored["results"]["seed1_final_model.int8.ptz"].values()) == {"PASS", "SKIP"}
    for knob, value in (("MLP_KIND", "swiglu"), ("NUM_LAYERS", "3"), ("PYTHONPATH", str(ROOT))):
        monkeypatch.setenv(knob, value)  # the caller's knobs never reach the record's process
    check = audit_check(folder, sub_of(folder), ROOT, val_data=data[0])
    assert check.status == "PASS", check.detail
    assert "the record's own code in its own process" in check.detail and "seed 1 rescored" in check.detail
    with pytest.raises(FileExistsError):
        write_audit(folder, sub_of(folder), ROOT)  # pack never overwrites a record's audit


def test_a_record_packed_from_a_modified_checkout_fails_the_audit(record, tmp_path):
    """Bug: verify audited the verifier's checkout, so this record (its forward_logits adds +20 to the logit of the
    next input token, i.e. the target) verified OK."""
    folder = copy_of(record[1], tmp_path)
    repacked(folder, "arch/gpt.py", "        return self.logit_softcap * torch.tanh(proj / self.logit_softcap)",
             "        out = self.logit_softcap * torch.tanh(proj / self.logit_softcap)\n"
             "        return out + 20.0 * F.one_hot(torch.roll(input_ids, -1, 1), out.size(-1)).to(out.dtype)")
    check = audit_check(folder, sub_of(folder), ROOT)
    assert check.status == "FAIL" and "causality: reads the future" in check.detail, check.detail
    assert "differs from audit.json" in check.detail


def test_a_record_shipping_a_modified_evaluator_fails(record, tmp_path):
    folder = copy_of(record[1], tmp_path)
    repacked(folder, "eval/sliding.py", "        acc.add(nll.float()[mask], x[mask], y[mask], luts)",
             "        acc.add(0.9 * nll.float()[mask], x[mask], y[mask], luts)")
    check = audit_check(folder, sub_of(folder), ROOT)
    assert check.status == "FAIL" and "ships a modified evaluator: ['eval/sliding.py']" in check.detail, check.detail


def test_a_logged_score_the_artifact_does_not_give_fails_the_rescore(record, tmp_path):
    data, original = record
    folder = copy_of(original, tmp_path)
    log = folder / "train_seed1.log"
    text = log.read_text()
    m = re.findall(r"^final_sliding_window_exact val_loss:([\d.]+) val_bpb:([\d.]+)$", text, re.M)[-1]
    log.write_text(text.replace(f"val_bpb:{m[1]}", f"val_bpb:{float(m[1]) - 0.05:.8f}"))
    check = audit_check(folder, sub_of(folder), ROOT, val_data=data[0])
    assert check.status == "FAIL" and "did not come from the harness's scoring" in check.detail, check.detail


@pytest.mark.slow
def test_an_edited_audit_result_fails(record, tmp_path):
    folder = copy_of(record[1], tmp_path)
    stored = json.loads((folder / AUDIT_FILE).read_text())
    stored["results"]["seed1_final_model.int8.ptz"]["causality"] = "FAIL"
    (folder / AUDIT_FILE).write_text(json.dumps(stored))
    check = audit_check(folder, sub_of(folder), ROOT)
    assert check.status == "FAIL" and "seed1_final_model.int8.ptz:causality" in check.detail, check.detail
    stored["results"]["seed1_final_model.int8.ptz"]["causality"] = "PASS"
    stored["identity"] = stored["identity"] + ["--seq-len", "8"]
    (folder / AUDIT_FILE).write_text(json.dumps(stored))
    check = audit_check(folder, sub_of(folder), ROOT)
    assert check.status == "FAIL" and "holds another command" in check.detail, check.detail
    (folder / AUDIT_FILE).unlink()
    check = audit_check(folder, sub_of(folder), ROOT)
    assert check.status == "FAIL" and "no audit.json" in check.detail


def test_a_folder_not_in_our_packed_format_is_skipped(record, tmp_path):
    folder = copy_of(record[1], tmp_path)
    (folder / "train_gpt.py").write_text("import torch\nprint('a public record trainer')\n")
    check = audit_check(folder, sub_of(folder), ROOT)
    assert check.status == "SKIP" and "not a file `records pack` made" in check.detail


def test_smoke_knobs_fit_the_smoke_window():
    """Bug: the smoke run forced TRAIN_SEQ_LEN=32 but kept EVAL_STRIDE=64, which the trainer refuses."""
    assert smoke_knobs({"EVAL_STRIDE": "64"})["EVAL_STRIDE"] == "16"
    assert smoke_knobs({"EVAL_STRIDE": "0"})["EVAL_STRIDE"] == "0"
    assert smoke_knobs({"EVAL_SEQ_LEN": "2048", "EVAL_STRIDE": "64"})["EVAL_SEQ_LEN"] == "32"
    assert "EVAL_STRIDE" not in smoke_knobs({})  # the trainer's default is capped at the window
    assert smoke_knobs({"MLP_KIND": "hwnode", "MLP_KIND_LAYERS": "5-8", "NUM_LAYERS": "9"})["NUM_LAYERS"] == "9"
    assert smoke_knobs({"MLP_KIND": "hwnode"})["NUM_LAYERS"] == "2" and smoke_knobs({"MLP_KIND": "hwnode"})["MLP_KIND"] == "hwnode"


@pytest.mark.slow
def test_smoke_run_of_a_record_with_a_long_eval_stride_passes(record, tmp_path):
    data, original = record
    folder = copy_of(original, tmp_path)
    sub = sub_of(folder)
    sub["run_env"] = dict(sub.get("run_env") or {}, EVAL_STRIDE="64", EVAL_SEQ_LEN="1024")
    check = smoke_check(folder, sub, data, ROOT)
    assert check.status == "PASS", check.detail


@pytest.mark.slow
def test_the_committed_example_record_passes_its_audit():
    if not (EXAMPLE / AUDIT_FILE).is_file():
        pytest.skip("the example record has no audit.json in this checkout")
    check = audit_check(EXAMPLE, sub_of(EXAMPLE), ROOT)
    assert check.status == "PASS", check.detail
    assert "rescored" in check.detail and "evaluator = the harness's" in check.detail
    # packed after eval/logprob.py: its evaluator owns the target, so there is no model loss path to check
    assert "--own-loss" not in json.loads((EXAMPLE / AUDIT_FILE).read_text())["command"]


def test_a_virtual_environment_inside_the_checkout_is_not_the_repository(tmp_path, monkeypatch):
    """CI (and ./run.sh) make .venv inside the checkout: its site-packages (e.g. setuptools' _distutils_hack) is
    the Python environment, not repository code a record forgot to bundle."""
    import importlib
    import sysconfig

    from eval.remote import repo_modules

    purelib = os.path.join(os.path.realpath(sysconfig.get_paths()["purelib"]), "")
    assert repo_modules(purelib) == []  # everything there is the environment's, even if the checkout holds it
    (tmp_path / "forgotten_module.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("forgotten_module")
    assert repo_modules(os.path.join(os.path.realpath(tmp_path), "")) == ["forgotten_module"]


def test_a_record_whose_evaluator_predates_the_scorer_gets_the_own_loss_check(tmp_path):
    """A record packed before eval/logprob.py scored through its model's forward(x, y): its audit adds --own-loss.
    (The v1 fixture is the example's train_gpt.py as packed then; the folder's json and logs are today's.)"""
    from records.rerun import audit_plan

    folder = copy_of(EXAMPLE, tmp_path)
    assert "--own-loss" not in audit_plan(folder, sub_of(folder))["identity"]
    shutil.copyfile(ROOT / "tests" / "fixtures" / "v1_record_train_gpt.py.txt", folder / "train_gpt.py")
    assert "--own-loss" in audit_plan(folder, sub_of(folder))["identity"]
