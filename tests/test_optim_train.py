"""The optimizer knobs inside the trainer: Coupled Adam, Muon/Adam weight decay and EMA survive the warmup
restore, the EMA weights are what gets exported, and the embedding-health report is logged."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from tests.test_train import final_exact, run_trainer, tiny, train_losses  # noqa: F401  (tiny is a fixture)

RECIPE = dict(EMBED_OPTIMIZER="coupled_adam", COUPLED_ADAM_SCALE="0.5", MUON_WD="0.05", ADAM_WD="0.05", EMA_DECAY="0.5")


def val_loss(pattern: str, text: str) -> float:
    m = re.search(pattern + r" val_loss:([\d.]+)", text)
    assert m, text[-2000:]
    return float(m.group(1))


def test_recipe_survives_warmup_restore_and_exports_ema(tmp_path, tiny):
    cold = run_trainer(tmp_path / "cold", tiny, {**RECIPE, "WARMUP_STEPS": "0"})
    warm = run_trainer(tmp_path / "warm", tiny, {**RECIPE, "WARMUP_STEPS": "3"})
    assert "warmup_step:3/3" in warm.stdout
    # warmup is undone completely: model, optimizer state (Adam moments, Muon momentum, step counts) and EMA
    assert train_losses(cold.stdout) == train_losses(warm.stdout) and len(train_losses(cold.stdout)) == 4
    assert final_exact(cold.stdout) == final_exact(warm.stdout)
    sd_cold = torch.load(tmp_path / "cold" / "artifacts" / "t" / "final_model.pt")
    sd_warm = torch.load(tmp_path / "warm" / "artifacts" / "t" / "final_model.pt")
    assert all(torch.equal(sd_cold[k], sd_warm[k]) for k in sd_cold)

    out = cold.stdout
    assert re.search(r"optimizers: CoupledAdam\[tok_emb\.weight\]\(coupled_scale=0\.5,wd=0\.05\) Muon\[\d+ tensors\]\(wd=0\.05\)", out)
    assert re.search(r"embedding_health tok_emb\.weight isotropy:[\d.]+ mean_norm_ratio:[\d.]+", out)
    # the exported (and roundtrip-scored) weights are the EMA, not the live weights of the last step
    live, post_ema = val_loss(r"step:4/4", out), val_loss(r"diagnostic pre-quantization post-ema", out)
    roundtrip = final_exact(out)[0]
    assert "ema_updates:4" in out and live != post_ema
    assert abs(roundtrip - post_ema) < abs(roundtrip - live)


@pytest.mark.slow
def test_two_rank_torchrun_matches_one_rank_with_recipe(tmp_path, tiny):
    one = run_trainer(tmp_path / "one", tiny, RECIPE)
    two = run_trainer(tmp_path / "two", tiny, RECIPE, nproc=2)
    np.testing.assert_allclose(train_losses(one.stdout), train_losses(two.stdout), rtol=0, atol=2e-4)
    np.testing.assert_allclose(final_exact(one.stdout), final_exact(two.stdout), rtol=0, atol=2e-4)
