"""PPO presets. Every result is labelled with its preset; compare with the PR numbers only under "ref".

ref:   the reference's own PPO settings (single env, 2048-step rollouts, 4 epochs × minibatch 64,
       γ 0.99, λ 0.95, ent 0.01; 245 updates in 500K steps). Reproduces the reported numbers (RL.md §5).
       SB3 still bootstraps on time-limit truncation and uses Adam eps 1e-5; the reference does neither.
zoo:   rl-baselines3-zoo's tuned LunarLander PPO (16 envs × 1024 steps, γ 0.999, λ 0.98); tuned for 1M
       steps, so at 500K (31 updates) nothing has converged yet.
smoke: a few thousand steps and a few eval episodes, for CI: proves the pipeline, not the policy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENV_ID = "LunarLander-v3"
SOLVED_RETURN = 200.0  # gymnasium's reward_threshold for LunarLander
EVAL_SEED_OFFSET = 10_000  # the eval env is seeded apart from the training envs


@dataclass(frozen=True)
class Preset:
    name: str
    n_envs: int
    default_steps: int
    eval_episodes: int
    ppo: dict[str, Any] = field(default_factory=dict)


_COMMON = dict(learning_rate=3e-4, clip_range=0.2, vf_coef=0.5, max_grad_norm=0.5, ent_coef=0.01)

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("ref", n_envs=1, default_steps=500_000, eval_episodes=100,
           ppo=dict(_COMMON, n_steps=2048, batch_size=64, n_epochs=4, gamma=0.99, gae_lambda=0.95)),
    Preset("zoo", n_envs=16, default_steps=500_000, eval_episodes=100,
           ppo=dict(_COMMON, n_steps=1024, batch_size=64, n_epochs=4, gamma=0.999, gae_lambda=0.98)),
    Preset("smoke", n_envs=2, default_steps=2_048, eval_episodes=3,
           ppo=dict(_COMMON, n_steps=256, batch_size=128, n_epochs=1, gamma=0.99, gae_lambda=0.95)),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown RL preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
