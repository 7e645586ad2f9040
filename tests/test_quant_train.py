"""The trainer's export section: several schemes from one run, size lines equal file sizes, QAT and GPTQ
switched on inside the run, the over-budget warning."""
from __future__ import annotations

import re

import pytest

from quant.entropy import EntropyReport
from quant.export import Artifact, artifact_log_lines
from quant.schemes import parse_export_specs
from tests.test_train import run_trainer, tiny  # noqa: F401  (tiny is a fixture)


def test_export_schemes_sizes_qat_gptq(tmp_path, tiny):  # noqa: F811
    schemes = "int8+zlib,int6+zstd,mixed+ans"
    proc = run_trainer(tmp_path, tiny, {
        "EXPORT_SCHEMES": schemes, "QUANT_FLOAT_MAX_NUMEL": "256", "ZSTD_LEVEL": "3",
        "QAT_SCHEME": "int6", "QAT_START_LR_SCALE": "0.6", "GPTQ": "1", "GPTQ_CALIB_TOKENS": "1024",
    })
    out = proc.stdout
    assert re.search(r"qat:armed scheme:int6 layers:12", out) and re.search(r"qat:on step:\d+", out)
    m = re.search(r"gptq:reserve [\d.]+s collected (\d+) Hessians from (\d+) training tokens", out)
    assert m and int(m.group(1)) == 12 and int(m.group(2)) >= 1024
    code = int(re.search(r"Code size: (\d+) bytes", out).group(1))
    art_dir = tmp_path / "artifacts" / "t"
    for spec in parse_export_specs(schemes):
        total = int(re.search(rf"Total submission size {re.escape(spec.label)}: (\d+) bytes", out).group(1))
        assert total == (art_dir / spec.filename).stat().st_size + code
        assert re.search(rf"entropy_report {re.escape(spec.label)}: .* compressed:\d+", out)
        assert re.search(rf"{spec.metric_name}_exact val_loss:[\d.]+ val_bpb:[\d.]+", out)
    assert out.count("val_targets_scored:") == 3
    assert "final_int8_zlib_roundtrip_exact" in out
    log = (tmp_path / "logs" / "t.txt").read_text()
    assert "entropy_tensor int6+zstd blocks.0.attn.c_q.weight bits:6" in log  # per-tensor detail, file only
    assert "# ===== quant/qat.py =====" in log  # the quant code that ran is counted and snapshotted


def test_bad_export_scheme_fails_at_start(tmp_path, tiny):  # noqa: F811
    proc = run_trainer(tmp_path, tiny, {"EXPORT_SCHEMES": "int6+rar"}, check=False)
    assert proc.returncode != 0 and "unknown compressor 'rar'" in proc.stderr


def test_over_budget_is_a_loud_warning(tmp_path):
    (spec,) = parse_export_specs("int6+zstd")
    art = Artifact(spec, tmp_path / spec.filename, 15_990_000, EntropyReport([], 0.0, 0.0, 0))
    lines = [line for line, _ in artifact_log_lines(art, 20_000, 1.0)]
    assert "Total submission size int6+zstd: 16010000 bytes" in lines
    assert any(line.startswith("WARNING: int6+zstd total 16010000 bytes is OVER") for line in lines)
    assert any(set(line) == {"!"} for line in lines)
    ok = [line for line, _ in artifact_log_lines(art, 10_000, 1.0)]
    assert "budget int6+zstd: under by 0 bytes" in ok and not any("WARNING" in line for line in ok)


@pytest.mark.parametrize("env,needle", [({"QAT_SCHEME": "int3"}, "QAT_SCHEME"), ({"QUANT_MIX": "attn"}, "pattern=BITS"),
                                        ({"ZSTD_LEVEL": "40"}, "ZSTD_LEVEL"),
                                        ({"GPTQ": "1", "GPTQ_RESERVE_SECONDS": "200", "MAX_WALLCLOCK_SECONDS": "100"}, "GPTQ_RESERVE")])
def test_quant_knobs_validated(env, needle):
    import train_gpt

    with pytest.raises(train_gpt.KnobError, match=needle):
        train_gpt.Hyperparameters(env=env, device_type="cpu")


def test_gptq_reserve_shortens_training_cap():
    import train_gpt

    args = train_gpt.Hyperparameters(env={"GPTQ": "1", "GPTQ_RESERVE_SECONDS": "8", "MAX_WALLCLOCK_SECONDS": "100"}, device_type="cpu")
    assert args.train_seconds == 92.0
    assert train_gpt.Hyperparameters(env={"MAX_WALLCLOCK_SECONDS": "100"}, device_type="cpu").train_seconds == 100.0


