"""`records verify` on the official record layout: the shared public records (skipped without ../shared) and
synthetic official folders. Every FAIL on a public folder is a real defect of that record, named in the detail."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from records.verify import verify

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT.parent / "shared" / "data" / "public_records"
ORDER = ["files", "submission", "logs", "json-vs-logs", "size", "packed-file", "smoke", "significance", "audit"]

# Per folder, the status of each check in ORDER (P pass, F fail, S skip), read by hand from each folder.
STATUS = {
    "2026-03-17_LoRA_TTT": "PPPFPSSSS",
    "2026-03-18_FP16Embed_WD3600": "PPPFPSSSS",
    "2026-03-18_LowerLR": "PPPPPSSSS",
    "2026-03-19_MLP3x_QAT_Int6_SlidingWindow": "PFFFPSSSS",
    "2026-03-19_Seq2048_FP16Emb_TunedLR": "FPPFPSSSS",
    "2026-03-19_SlidingWindow_FP16Emb_10L_MuonWD_OvertoneInit": "PFPPPSSSS",
    "2026-03-19_WarmdownQuantization": "PPPPPSSSS",
    "2026-03-19_smeargate_orthoinit_muonwd": "FFPPPSSSS",
    "2026-03-20_11L_EfficientPartialXSA_FA3_SWA120": "FPPPPSSSS",
    "2026-03-20_Int6_MLP3x_SmearGate_BigramHash_MuonWD_SWA": "PPPPPSSSS",
    "2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233": "FPPFPSSSS",
    "2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon": "FFPFPSSSS",
    "2026-03-29_Loader_FullGPTQ_XSA11_BigramHash2816": "PPPPPSSSS",
    "2026-04-01_Vocab4096_MLPMult4_WD085": "PPPFPSSSS",
    "2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR": "FPPFPSSSS",
    "2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence": "FPPFFSSSS",
    "2026-04-08_SP8192_ParallelResid_ScoreFirstTTT": "FPPFPSSSS",
    "2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT": "FPPPPSSSS",
    "2026-04-13_VarLenAttn_PhasingTTT2000": "PPPPPSSSS",
    "2026-04-16_SmearGate_AttentionOutputGate_ScoreFirstTTT": "FPPFPSSSS",
    "2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT": "FPPPPSSSS",
    "2026-04-23_SP8192_CaseOps_SparseGate_QuantGate_Loop45_PhasedTTT_PolarNS_MinLR_FusedCE": "FPPPPSSSS",
    "2026-04-27_SmearGateBOSFix_PR1787Base_LQERAsym_PhasedTTT": "FPPPPSSSS",
    "2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3": "PPPPPSSSS",
    "2026-03-21_DepthRecurrence_MixedPrecisionQuant": "FPSSSSSSS",
    "2026-03-24_106M_Binary_Asymmetric_UNet_FP8_15L_8192BPE_YaRN_NeoMuon_Smear": "FFPPPSSSS",
    "2026-03-29_HNet_ByteVsSubword_Study": "FPPPPSSSS",
    "2026-03-30_ByteJEPA": "PPPPPSSSS",
    "2026-04-04_GDN_Hybrid_LongContext": "PPPFPSSSS",
    "2026-04-15_Mamba3Hybrid_SP8192_GPTQ_TTT": "FPPPPSSSS",
}
# The defect each FAIL names (one substring per failing check; every FAIL is listed here).
DEFECTS = {
    ("2026-03-17_LoRA_TTT", "json-vs-logs"): "bytes_total 15,882,446 matches no logged size",
    ("2026-03-18_FP16Embed_WD3600", "json-vs-logs"): "val_bpb 1.21972502 is seed 1337's score (train.log), not the mean",
    ("2026-03-19_MLP3x_QAT_Int6_SlidingWindow", "submission"): "the json lacks name",
    ("2026-03-19_MLP3x_QAT_Int6_SlidingWindow", "logs"): "no log for seeds 42, 123",
    ("2026-03-19_MLP3x_QAT_Int6_SlidingWindow", "json-vs-logs"): "but its only log (train.log, seed 1337) scores 1.16660881",
    ("2026-03-19_Seq2048_FP16Emb_TunedLR", "files"): "ships no requirements.txt: zstandard (train_gpt.py)",
    ("2026-03-19_Seq2048_FP16Emb_TunedLR", "json-vs-logs"): "is seed 3's score (train_seed3.log), not the mean of the 3 seeds",
    ("2026-03-19_SlidingWindow_FP16Emb_10L_MuonWD_OvertoneInit", "submission"): "lacks github_id, val_bpb (it has mean_val_bpb)",
    ("2026-03-19_smeargate_orthoinit_muonwd", "files"): "no train_gpt.py (the rules name the entry train_gpt.py, this folder ships train_gpt_v5.py)",
    ("2026-03-19_smeargate_orthoinit_muonwd", "submission"): "the json lacks name, github_id; no metadata",
    ("2026-03-20_11L_EfficientPartialXSA_FA3_SWA120", "files"): "ships no requirements.txt: flash_attn_interface",
    ("2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233", "files"): "ships no requirements.txt: flash_attn_interface",
    ("2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233", "json-vs-logs"): "is seed 1337's score (train.log), not the mean",
    ("2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon", "files"): "this folder ships train_gpt_cuda_ternary.py",
    ("2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon", "submission"): "named submission_ternary.json, not submission.json",
    ("2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon", "json-vs-logs"): "is seed 42's score (ternary_log_42.txt)",
    ("2026-04-01_Vocab4096_MLPMult4_WD085", "json-vs-logs"): "bytes_total 15,916,170 matches no logged size and is below the largest",
    ("2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR", "files"): "ships no requirements.txt: brotli (train_gpt.py), flash_attn",
    ("2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR", "json-vs-logs"): "final score is `final_int6_ttt` 1.336032",
    ("2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence", "files"): "brotli (train_gpt_decode.py)",
    ("2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence", "json-vs-logs"): "bytes_total 15,978,121 matches no logged size",
    ("2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence", "size"): "train_seed3141.log: total 16,059,704 bytes is 59,704 over",
    ("2026-04-08_SP8192_ParallelResid_ScoreFirstTTT", "files"): "ships no requirements.txt: brotli",
    ("2026-04-08_SP8192_ParallelResid_ScoreFirstTTT", "json-vs-logs"): "seed 999: artifact_bytes 15,991,486 but train_seed999.log",
    ("2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT", "files"): "ships no requirements.txt: brotli",
    ("2026-04-16_SmearGate_AttentionOutputGate_ScoreFirstTTT", "files"): "ships no requirements.txt: brotli",
    ("2026-04-16_SmearGate_AttentionOutputGate_ScoreFirstTTT", "json-vs-logs"): "seed 1337: artifact_bytes 15,910,554",
    ("2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT", "files"): "ships no requirements.txt: brotli",
    ("2026-04-23_SP8192_CaseOps_SparseGate_QuantGate_Loop45_PhasedTTT_PolarNS_MinLR_FusedCE", "files"): "no requirements.txt: brotli",
    ("2026-04-27_SmearGateBOSFix_PR1787Base_LQERAsym_PhasedTTT", "files"): "ships no requirements.txt: brotli",
    ("2026-03-21_DepthRecurrence_MixedPrecisionQuant", "files"): "no train log",
    ("2026-03-24_106M_Binary_Asymmetric_UNet_FP8_15L_8192BPE_YaRN_NeoMuon_Smear", "files"): "this folder ships train_gpt_cuda_binary.py",
    ("2026-03-24_106M_Binary_Asymmetric_UNet_FP8_15L_8192BPE_YaRN_NeoMuon_Smear", "submission"): "named submission_binary.json",
    ("2026-03-29_HNet_ByteVsSubword_Study", "files"): "this folder ships train_gpt_hnet.py, train_gpt_hnet_byte.py",
    ("2026-04-04_GDN_Hybrid_LongContext", "json-vs-logs"): "seed 1341: its score 1.4703 is in hybrid_gdn_1xh100_600s_seq32768.txt",
    ("2026-04-15_Mamba3Hybrid_SP8192_GPTQ_TTT", "files"): "this folder ships train_mamba3_hybrid.py",
}

# FAIL details naming more than one defect (their count of "; " separators); every other FAIL names exactly one.
DEFECT_COUNT = {
    ("2026-03-19_smeargate_orthoinit_muonwd", "submission"): 1,
    ("2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence", "size"): 2,
    ("2026-04-08_SP8192_ParallelResid_ScoreFirstTTT", "json-vs-logs"): 1,
}


@pytest.mark.skipif(not PUBLIC.is_dir(), reason="../shared/data/public_records not present")
def test_verify_on_every_public_record():
    folders = {d.name: d for d in sorted(PUBLIC.glob("*/*"))}
    assert set(folders) == set(STATUS)
    for name, folder in folders.items():
        checks = verify(folder, smoke=False)
        assert [c.name for c in checks] == ORDER, name
        got = "".join(c.status[0] for c in checks)
        assert got == STATUS[name], (name, [(c.name, c.status, c.detail) for c in checks])
        for c in checks:
            if c.status == "FAIL":
                assert DEFECTS[(name, c.name)] in c.detail, (name, c.name, c.detail)
                assert c.detail.count("; ") <= DEFECT_COUNT.get((name, c.name), 0), (name, c.name, c.detail)  # nothing more
            if c.status == "PASS":
                assert " total 0 " not in c.detail and c.detail  # a pass always says what it compared
        skips = {c.name: c.detail for c in checks if c.status == "SKIP"}
        assert "rerun needs CUDA" in skips["smoke"] and "not a records-pack bundle" in skips["packed-file"]
    assert set(DEFECTS) == {(n, c) for n, s in STATUS.items() for c, st in zip(ORDER, s) if st == "F"}


def _official(tmp_path: Path, sub: dict, logs: dict[str, str], code: str = "import torch\nimport numpy\n", **files) -> Path:
    folder = tmp_path / "track_10min_16mb" / "2026-04-01_Official"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("# Official\n")
    (folder / "submission.json").write_text(json.dumps(sub))
    (folder / "train_gpt.py").write_text(code)
    for name, text in {**logs, **files}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _log(seed: int, bpb: float, total: int = 15_900_000, exact: bool = False) -> str:
    name = "final_int8_zlib_roundtrip_exact" if exact else "quantized_ttt_phased"
    return (f"Hyperparameters:\n  seed: {seed}\nCode size: 30000 bytes\nSerialized model quantized+brotli: {total - 30000} bytes\n"
            f"Total submission size quantized+brotli: {total} bytes\n{name} val_loss:{bpb * 2.6:.8f} val_bpb:{bpb:.8f}\n")


def test_official_folder_needs_only_what_the_rules_ask(tmp_path):
    """No seeds/seed_results/bytes_code/track/val_loss/requirements.txt needed; logs matched without a `log` field;
    a finished log without `_exact` lines is finished; nothing compared is SKIP, never PASS."""
    sub = {"name": "Official", "github_id": "me", "author": "Me", "date": "2026-04-01", "val_bpb": 1.0725}
    folder = _official(tmp_path, sub, {"train_seed0.log": _log(0, 1.0722), "train_seed1.log": _log(1, 1.0728)})
    checks = {c.name: c for c in verify(folder, smoke=False)}
    assert [n for n, c in checks.items() if c.status == "FAIL"] == []
    assert checks["logs"].status == checks["json-vs-logs"].status == checks["size"].status == "PASS"
    assert checks["smoke"].status == "SKIP" and checks["significance"].status == "SKIP"
    proc = subprocess.run([sys.executable, "-m", "records", "verify", str(folder), "--no-smoke"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and "verify: OK" in proc.stdout


def test_official_folder_defects_are_caught(tmp_path):
    sub = {"name": "Official", "github_id": "me", "author": "Me", "val_bpb": 1.0700, "seed_results": {"0": {"val_bpb": 1.0700}}}
    folder = _official(tmp_path, sub, {"logs/run0.txt": "1776142360.5 " + _log(0, 1.0750).replace("\n", "\n1776142360.6 ", 4)},
                       code="import torch\nimport brotli\ntry:\n    import zstandard\nexcept ImportError:\n    zstandard = None\n")
    checks = {c.name: c for c in verify(folder, smoke=False)}
    assert checks["files"].status == "FAIL" and "requirements.txt: brotli (train_gpt.py)" in checks["files"].detail
    assert "zstandard" not in checks["files"].detail  # an optional import needs nothing
    assert checks["json-vs-logs"].status == "FAIL" and "seed 0: claimed 1.07 but run0.txt scores 1.075" in checks["json-vs-logs"].detail
    (folder / "requirements.txt").write_text("brotli\n")
    (folder / "logs" / "run0.txt").write_text(_log(0, 1.07, total=16_000_001))
    checks = {c.name: c for c in verify(folder, smoke=False)}
    assert checks["files"].status == "PASS" and checks["size"].status == "FAIL" and "1 over the 16,000,000 cap" in checks["size"].detail
    (folder / "logs" / "run0.txt").write_text("Hyperparameters:\n  seed: 0\nquantized_ttt_phased val_loss:2.78 val_bpb:1.07\n")
    checks = {c.name: c for c in verify(folder, smoke=False)}
    assert checks["size"].status == "SKIP" and "nothing to compare" in checks["size"].detail  # never "PASS largest total 0"
