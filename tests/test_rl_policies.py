"""RL policy networks: reference parameter counts, the SB3 mlp_extractor contract, explicit init, flow math."""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rl.poly_basis import chebyshev_basis, initial_coefficients, polynomial_matrix, power_basis
from rl.policy import POLICY_HEAD_GAIN, VALUE_HEAD_GAIN, VariantPolicy, parameter_counts, policy_for_variant
from rl.presets import get_preset
from rl.shared_hwnode import SharedHWNODE
from rl.stacked_hw import StackedHW
from rl.variants import VARIANTS, get_variant

# LunarLander-v3 spaces, without building Box2D: 8 observations, 4 discrete actions.
OBS = gym.spaces.Box(-np.inf, np.inf, shape=(8,), dtype=np.float32)
ACT = gym.spaces.Discrete(4)


def build_policy(variant: str, seed: int = 0):
    torch.manual_seed(seed)
    policy, kwargs = policy_for_variant(variant)
    if isinstance(policy, str):
        from stable_baselines3.common.policies import ActorCriticPolicy as policy
    return policy(OBS, ACT, lambda _: 3e-4, **kwargs)


# (total, actor, critic) measured by instantiating the reference classes (RL.md §3.4)
SPLITS = {"mlp-narrow": (9_573, 4_836, 4_737), "mlp-medium": (35_525, 17_860, 17_665),
          "mlp-large": (136_581, 68_484, 68_097), "hwnode-standard": (6_343, 3_269, 3_074),
          "hwnode-scaled": (21_895, 11_141, 10_754), "sb3-mlp64": (9_797, 4_996, 4_801)}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_count_matches_reference(name):
    counts = parameter_counts(build_policy(name))
    assert counts["total"] == VARIANTS[name].reference_params
    assert counts["actor"] + counts["critic"] == counts["total"]  # separate trunks, nothing shared
    if name in SPLITS:
        assert (counts["total"], counts["actor"], counts["critic"]) == SPLITS[name]


def test_reference_counts_quoted_in_the_brief():
    assert get_variant("hwnode-standard").reference_params == 6_343
    assert get_variant("mlp-narrow").reference_params == 9_573
    assert get_variant("hwnode-scaled").reference_params == 21_895


@pytest.mark.parametrize("name", ["mlp-narrow", "hwnode-standard", "chebyshev-learned", "cheb-ortho-param"])
def test_mlp_extractor_contract(name):
    policy = build_policy(name)
    ex = policy.mlp_extractor
    x = torch.randn(5, 8)
    pi, vf = ex(x)
    assert pi.shape == (5, ex.latent_dim_pi) and vf.shape == (5, ex.latent_dim_vf)
    # Training forwards advance the power iteration, so once it has settled consecutive calls agree closely ...
    with torch.no_grad():
        for _ in range(50):
            pi, vf = ex(x)
    torch.testing.assert_close(ex.forward_actor(x), pi, atol=5e-3, rtol=0)
    torch.testing.assert_close(ex.forward_critic(x), vf, atol=5e-3, rtol=0)
    policy.set_training_mode(False)
    with torch.no_grad():  # ... while rollout-mode forwards are exactly repeatable.
        pi, vf = ex(x)
        assert torch.equal(pi, ex.forward_actor(x)) and torch.equal(vf, ex.forward_critic(x))
    actor_ids = {id(p) for p in ex.policy_net.parameters()}
    assert actor_ids.isdisjoint(id(p) for p in ex.value_net.parameters())
    actions, values, log_prob = policy(torch.randn(3, 8))
    assert actions.shape == (3,) and values.shape == (3, 1) and torch.isfinite(log_prob).all()


@pytest.mark.parametrize("name", ["mlp-narrow", "hwnode-standard", "taylor-learned", "cheb-ortho-init", "cheb-ortho-param"])
def test_initialisation_is_explicit(name):
    policy = build_policy(name)
    for head, gain in ((policy.action_net, POLICY_HEAD_GAIN), (policy.value_net, VALUE_HEAD_GAIN)):
        w = head.weight.detach()
        assert torch.allclose(w @ w.T, gain**2 * torch.eye(w.size(0)), atol=1e-6)  # orthogonal rows, scaled
        assert torch.count_nonzero(head.bias) == 0
    trunk = policy.mlp_extractor.policy_net
    # SB3's ortho_init would have zeroed every Linear bias in the extractor; ours keep PyTorch's default init.
    assert torch.count_nonzero(trunk.embed.bias) > 0
    if name == "hwnode-standard":
        assert 0.07 < trunk.A.std().item() < 0.13 and trunk.dt.item() == 1.0
    if name.startswith("cheb-ortho"):
        A = trunk.blocks[0].flow.weight.detach()
        assert torch.allclose(A.T @ A, torch.eye(A.size(0)), atol=1e-5)
    if name == "taylor-learned":
        torch.testing.assert_close(trunk.blocks[0].coefficients.detach(), torch.tensor([1, 1, 1 / 2, 1 / 6, 1 / 24]))


def test_ortho_init_request_is_refused_and_unknown_names_listed():
    with pytest.raises(ValueError, match="initialises explicitly"):
        VariantPolicy(OBS, ACT, lambda _: 3e-4, variant="hwnode-standard", ortho_init=True)
    with pytest.raises(ValueError, match="unknown RL variant 'hwnode'.*hwnode-standard"):
        get_variant("hwnode")
    with pytest.raises(ValueError, match="unknown RL preset 'fast'.*ref, zoo, smoke"):
        get_preset("fast")


def test_seeded_construction_is_deterministic():
    a, b = build_policy("hwnode-scaled", seed=3), build_policy("hwnode-scaled", seed=3)
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), na


# ---------- flow math ----------

def settle(net: SharedHWNODE, calls: int = 50) -> None:
    net.train()
    with torch.no_grad():
        for _ in range(calls):
            net(torch.randn(2, 8))


def test_hwnode_flow_matches_matrix_exponential_at_high_order():
    net = SharedHWNODE(8, 16, 6, virtual_depth=1, order=14)
    settle(net)
    with torch.no_grad():
        net.dt.fill_(0.7)
        sigma = torch.linalg.matrix_norm(net.A, 2)
        expected = torch.linalg.matrix_exp(0.7 * net.A / sigma)
        torch.testing.assert_close(net.flow_matrix(), expected, atol=1e-5, rtol=1e-5)


def test_one_power_step_per_call_converges_to_the_spectral_norm():
    net = SharedHWNODE(8, 32, 16, virtual_depth=2, order=4)
    settle(net)
    from arch.hwnode_flow import spectral_norm_estimate

    sigma_hat = spectral_norm_estimate(net.A, net.u, net.v)
    assert abs(sigma_hat.item() / torch.linalg.matrix_norm(net.A.detach(), 2).item() - 1) < 1e-3


def test_deep_high_order_hwnode_stays_finite_and_trains():
    net = SharedHWNODE(8, 64, 16, virtual_depth=4, order=8, term_gates=True)
    y = net(10 * torch.randn(32, 8))
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert net.A.grad.abs().sum() > 0 and net.term_gates.grad.abs().sum() > 0


def test_flow_cache_in_rollouts_is_invalidated_by_an_optimizer_step():
    net = SharedHWNODE(8, 16, 4, virtual_depth=2, order=4)
    net.eval()
    with torch.no_grad():
        first = net.flow_matrix()
        assert net.flow_matrix() is first  # cached during no-grad eval (SB3 rollouts)
    net.train()
    loss = net(torch.randn(4, 8)).sum()
    loss.backward()
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    net.eval()
    with torch.no_grad():
        again = net.flow_matrix()
    assert again is not first and not torch.equal(again, first)
    with torch.enable_grad():
        assert net.flow_matrix().requires_grad  # never served from the cache when grad is on


def test_polynomial_bases():
    theta = torch.tensor(0.4, dtype=torch.float64)
    M = torch.cos(theta).reshape(1, 1).double()
    cheb = chebyshev_basis(M, 6).flatten()
    torch.testing.assert_close(cheb, torch.cos(torch.arange(7) * theta))  # T_k(cos θ) = cos kθ
    A = torch.randn(5, 5).double()
    for k, term in enumerate(power_basis(A, 4)):
        torch.testing.assert_close(term, torch.linalg.matrix_power(A, k), atol=1e-9, rtol=1e-9)
    taylor = polynomial_matrix(A / 10, initial_coefficients("taylor", 10).double(), "taylor")
    torch.testing.assert_close(taylor, torch.linalg.matrix_exp(A / 10))
    assert initial_coefficients("chebyshev", 4).tolist() == pytest.approx([1, 1, 1 / 2, 1 / 3, 1 / 4])
    with pytest.raises(ValueError, match="unknown polynomial basis"):
        initial_coefficients("legendre", 3)


def test_stacked_blocks_keep_normalized_a_within_unit_norm():
    for mode in ("spectral", "ortho-init", "ortho-param"):
        net = StackedHW(8, 32, 8, blocks=2, order=4, basis="chebyshev", a_mode=mode)
        net.train()
        with torch.no_grad():
            for _ in range(30):
                net(torch.randn(4, 8))
            A = net.blocks[0].normalized_a()
        assert math.isclose(torch.linalg.matrix_norm(A, 2).item(), 1.0, rel_tol=1e-3), mode
    with pytest.raises(ValueError, match="unknown A mode"):
        StackedHW(8, 32, 8, blocks=1, order=2, basis="taylor", a_mode="free")
