"""RL training runs and the resumable comparison CLI, on the smoke preset (a few hundred env steps)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rl.compare import parse_args, run_path
from rl.report import write_report
from rl.run import build_model
from rl.variants import VARIANTS

ROOT = Path(__file__).resolve().parents[1]



def learned(variant: str, seed: int, steps: int):
    model = build_model(variant, seed, "smoke")
    start = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(total_timesteps=steps)
    return model, start


def test_hwnode_policy_trains_a_few_updates_deterministically():
    a, start = learned("hwnode-standard", 0, 1024)  # 2 rollouts of 2 envs x 256 steps, 2 PPO updates
    b, _ = learned("hwnode-standard", 0, 1024)
    assert a.num_timesteps == 1024 and a._n_updates == 2
    changed = [k for k, v in a.policy.state_dict().items() if not torch.equal(v, start[k])]
    for name in ("mlp_extractor.policy_net.A", "mlp_extractor.policy_net.dt", "mlp_extractor.value_net.w_in.weight",
                 "action_net.weight", "value_net.weight"):
        assert name in changed, name
    for k, v in a.policy.state_dict().items():
        assert torch.isfinite(v).all(), k
        assert torch.equal(v, b.policy.state_dict()[k]), f"{k} differs between two runs with the same seed"
    assert [e["r"] for e in a.ep_info_buffer] == [e["r"] for e in b.ep_info_buffer]


def test_orthogonal_parametrization_survives_ppo_updates():
    model, start = learned("cheb-ortho-param", 1, 512)
    A = model.policy.mlp_extractor.policy_net.blocks[0].flow.weight.detach()
    assert torch.allclose(A.T @ A, torch.eye(A.size(0)), atol=1e-4)
    key = "mlp_extractor.policy_net.blocks.0.flow.parametrizations.weight.original"
    assert not torch.equal(model.policy.state_dict()[key], start[key])  # trained, still orthogonal


def test_compare_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--variants", "mlp-narrow,hwnode"])
    assert "unknown RL variant 'hwnode'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--steps", "0"])
    assert "must be positive" in capsys.readouterr().err


def fake_run(variant: str, seed: int, train: float, evaluation: float, steps_per_second: float = 5017.6) -> dict:
    return {"variant": variant, "seed": seed, "preset": "ref", "env_steps": 501_760,
            "params": {"total": 6_343, "actor": 3_269, "critic": 3_074}, "train_last100_mean": train,
            "eval_episodes": 100, "eval_mean": evaluation, "eval_std": 10.0, "eval_solved_fraction": 0.5,
            "train_seconds": 100.0, "env_steps_per_second": steps_per_second, "curve": [[2048, None], [4096, -100.0 + seed]]}


def test_report_aggregates_over_seeds_with_population_std(tmp_path):
    paths = []
    for seed, (train, ev) in enumerate([(240.0, 190.0), (250.0, 230.0)]):
        paths.append(tmp_path / f"{seed}.json")
        paths[-1].write_text(json.dumps(fake_run("hwnode-standard", seed, train, ev)))
    table = write_report(tmp_path, "ref", 500_000, ["hwnode-standard"], paths)
    assert ("| hwnode-standard | 6,343 | 0,1 | 245.0 ± 5.0 | 210.0 ± 20.0 | 1/2 | 5018 | 215.4 ± 13.3 |"
            in table)
    assert "reference (PR, 500K, 3 seeds)" in table and "(501,760 env steps run" in table
    for name in ("summary_ref_500000.csv", "summary_ref_500000.md", "runs_ref_500000.csv", "curves_ref_500000.png"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_report_throughput_is_the_median_run(tmp_path):
    # One run slowed 10x by a busy machine must not drag the variant's steps/s down with it.
    paths = []
    for seed, speed in enumerate([140.0, 1300.0, 1480.0]):
        paths.append(tmp_path / f"{seed}.json")
        paths[-1].write_text(json.dumps(fake_run("mlp-narrow", seed, 200.0, 200.0, speed)))
    table = write_report(tmp_path, "ref", 500_000, ["mlp-narrow"], paths)
    assert "| 3/3 | 1300 |" in table


@pytest.mark.parametrize("preset", ["zoo", "ref"])
def test_committed_results_are_what_the_report_makes_of_their_runs(tmp_path, preset):
    """rl/results holds the measured tables; they must be regenerable from the committed run records."""
    results = Path(__file__).resolve().parents[1] / "rl" / "results"
    summary = results / f"summary_{preset}_500000.md"
    if not summary.exists():
        pytest.skip(f"no committed {preset} results")
    paths = sorted((results / "runs").glob(f"*__{preset}__500000__seed*.json"))
    found = {json.loads(p.read_text())["variant"] for p in paths}
    variants = [v for v in VARIANTS if v in found]  # the order rl.compare lists them in
    write_report(tmp_path, preset, 500_000, variants, paths)
    assert (tmp_path / summary.name).read_text() == summary.read_text()


def test_killed_comparison_resumes_without_rerunning_finished_runs(tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "rl.compare", "--variants", "mlp-narrow", "--seeds", "0,1", "--preset", "smoke",
           "--steps", "512", "--eval-episodes", "1", "--jobs", "1", "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    first, second = (run_path(out, "mlp-narrow", "smoke", 512, s) for s in (0, 1))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 280
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole comparison, workers included, mid-way
    log = proc.communicate()[0].decode()
    assert first.exists(), log
    assert not second.exists(), "the second run finished before the kill; the test proves nothing"
    assert not list(out.glob("runs/*.tmp")), "a killed run left a partial result"
    before = (first.read_bytes(), first.stat().st_mtime_ns)

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "runs:2 done:1 todo:1" in resumed.stdout
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before  # the finished run was not re-run
    result = json.loads(second.read_text())
    assert result["env_steps"] == 512 and result["params"]["total"] == 9_573
    assert result["eval_episodes"] == 1 and result["curve"][-1][0] == 512
    assert "| mlp-narrow | 9,573 | 0,1 |" in (out / "summary_smoke_512.md").read_text()
    assert (out / "curves_smoke_512.png").stat().st_size > 0


def test_compare_refuses_mixed_evaluations_and_reports_without_running(tmp_path):
    from rl.compare import main

    path = run_path(tmp_path, "mlp-narrow", "smoke", 512, 0)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(fake_run("mlp-narrow", 0, 1.0, 2.0)))  # evaluated over 100 episodes
    with pytest.raises(SystemExit, match="different number of episodes than 3"):
        main(["--variants", "mlp-narrow", "--seeds", "0", "--preset", "smoke", "--steps", "512",
              "--out", str(tmp_path)])
    # --report-only starts no run: the missing seed 1 stays missing and the table shows seed 0 alone.
    assert main(["--variants", "mlp-narrow", "--seeds", "0,1", "--preset", "smoke", "--steps", "512",
                 "--eval-episodes", "100", "--out", str(tmp_path), "--report-only"]) == 0
    assert not run_path(tmp_path, "mlp-narrow", "smoke", 512, 1).exists()
    assert "| mlp-narrow | 6,343 | 0 |" in (tmp_path / "summary_smoke_512.md").read_text()
