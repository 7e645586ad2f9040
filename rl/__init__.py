"""PPO benchmark of small policy networks (residual MLP vs HWNODE) on LunarLander-v3.

Policies are stable-baselines3 `ActorCriticPolicy` subclasses that swap only the mlp_extractor
(rl/policy.py); the networks live in residual_mlp.py, shared_hwnode.py and stacked_hw.py; the named
variants with their reference parameter counts in variants.py; PPO presets in presets.py; one
training run in run.py; the resumable multi-process comparison CLI in compare.py
(`python -m rl.compare --help`). Facts and reference numbers: ../shared/design/RL.md.
"""
