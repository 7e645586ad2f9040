"""One training run: PPO on LunarLander-v3 for one (variant, seed, preset, steps), then a
deterministic evaluation on a separately seeded env. Returns a JSON-able dict of metrics and the curve.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from rl.policy import parameter_counts, policy_for_variant
from rl.presets import ENV_ID, EVAL_SEED_OFFSET, SOLVED_RETURN, get_preset
from rl.variants import get_variant


def make_env(n_envs: int, seed: int):
    # render_mode=None matters: SB3's default "rgb_array" makes LunarLander spawn a Box2D particle per
    # engine firing that only reset() clears, ~3.5x slower training with identical returns (RL.md §3.7).
    return make_vec_env(ENV_ID, n_envs=n_envs, seed=seed, env_kwargs={"render_mode": None})


def last_episodes_mean(model: PPO) -> float | None:
    """Mean return of the last ≤100 finished training episodes (Monitor stats, stochastic policy)."""
    returns = [ep["r"] for ep in model.ep_info_buffer]
    return float(np.mean(returns)) if returns else None


class _CurveRecorder(BaseCallback):
    """Records (env steps, last-100 training mean) at each rollout end and reports progress."""

    def __init__(self, progress: Callable[[int], None] | None):
        super().__init__()
        self.curve: list[tuple[int, float | None]] = []
        self.progress = progress

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.curve.append((int(self.model.num_timesteps), last_episodes_mean(self.model)))
        if self.progress is not None:
            self.progress(int(self.model.num_timesteps))


def build_model(variant: str, seed: int, preset_name: str) -> PPO:
    preset = get_preset(preset_name)
    get_variant(variant)  # fail early with the list of valid names
    policy, policy_kwargs = policy_for_variant(variant)
    return PPO(policy, make_env(preset.n_envs, seed), policy_kwargs=policy_kwargs, seed=seed,
               device="cpu", verbose=0, **preset.ppo)


def train_and_evaluate(variant: str, seed: int, preset_name: str, steps: int,
                       eval_episodes: int | None = None,
                       progress: Callable[[int], None] | None = None) -> dict:
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    preset = get_preset(preset_name)
    eval_episodes = preset.eval_episodes if eval_episodes is None else eval_episodes
    model = build_model(variant, seed, preset_name)
    recorder = _CurveRecorder(progress)
    start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=recorder)
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    eval_env = make_env(1, seed + EVAL_SEED_OFFSET)
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=eval_episodes, deterministic=True,
                                 return_episode_rewards=True)
    eval_s = time.perf_counter() - start
    returns = np.asarray(returns, dtype=float)
    train_mean = last_episodes_mean(model)
    result = {
        "variant": variant, "seed": seed, "preset": preset_name, "steps_requested": steps,
        "env_steps": int(model.num_timesteps),  # rounded up to whole rollouts by SB3
        "params": parameter_counts(model.policy),
        "train_last100_mean": train_mean,
        "train_episodes": len(model.ep_info_buffer),
        "eval_episodes": int(returns.size),
        "eval_mean": float(returns.mean()), "eval_std": float(returns.std()),
        "eval_solved_fraction": float((returns >= SOLVED_RETURN).mean()),
        "train_seconds": train_s, "eval_seconds": eval_s,
        "env_steps_per_second": model.num_timesteps / train_s,
        "curve": recorder.curve,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    }
    if not all(math.isfinite(x) for x in (result["eval_mean"], result["eval_std"])):
        raise FloatingPointError(f"{variant} seed {seed}: non-finite evaluation returns {returns}")
    return result
