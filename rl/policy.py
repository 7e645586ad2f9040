"""SB3 ActorCriticPolicy that swaps only the mlp_extractor for a pair of variant backbones.

SB3 builds the mlp_extractor inside ActorCriticPolicy.__init__ (via _build_mlp_extractor), then the
action/value heads from its latent dims, then re-initialises with ortho_init. That re-init would
overwrite our backbones' Linear layers (and silently skip parametrized weights), so ortho_init is off
and the init is explicit: backbones init themselves as the reference does; the heads get orthogonal
weights (gain 0.01 policy, 1.0 value) and zero bias, as both the reference and SB3 do.
"""
from __future__ import annotations

from typing import Any

from stable_baselines3.common.policies import ActorCriticPolicy
from torch import Tensor, nn

from rl.variants import get_variant

POLICY_HEAD_GAIN, VALUE_HEAD_GAIN = 0.01, 1.0


class SeparateBackbones(nn.Module):
    """The mlp_extractor contract: latent_dim_pi/vf, forward, forward_actor, forward_critic."""

    def __init__(self, policy_net: nn.Module, value_net: nn.Module):
        super().__init__()
        self.policy_net, self.value_net = policy_net, value_net
        self.latent_dim_pi, self.latent_dim_vf = policy_net.out_dim, value_net.out_dim

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: Tensor) -> Tensor:
        return self.policy_net(features)

    def forward_critic(self, features: Tensor) -> Tensor:
        return self.value_net(features)


class VariantPolicy(ActorCriticPolicy):
    """policy_kwargs=dict(variant="hwnode-standard"); saved with the model, so PPO.load rebuilds it."""

    def __init__(self, *args: Any, variant: str, **kwargs: Any):
        spec = get_variant(variant)
        if spec.build is None:
            raise ValueError(f"variant {variant!r} is SB3's own MlpPolicy; use policy_for_variant() instead")
        self.variant = variant  # must exist before super().__init__, which calls _build_mlp_extractor
        if kwargs.get("ortho_init"):
            raise ValueError("VariantPolicy initialises explicitly; ortho_init=True would re-init the backbones")
        kwargs["ortho_init"] = False
        super().__init__(*args, **kwargs)
        for head, gain in ((self.action_net, POLICY_HEAD_GAIN), (self.value_net, VALUE_HEAD_GAIN)):
            nn.init.orthogonal_(head.weight, gain=gain)
            nn.init.zeros_(head.bias)

    def _build_mlp_extractor(self) -> None:
        build = get_variant(self.variant).build
        self.mlp_extractor = SeparateBackbones(build(self.features_dim), build(self.features_dim))


def policy_for_variant(variant: str) -> tuple[type[ActorCriticPolicy] | str, dict[str, Any]]:
    """(policy, policy_kwargs) for PPO(...)."""
    if get_variant(variant).build is None:
        return "MlpPolicy", {"net_arch": [64, 64]}  # SB3 default Tanh MLP with ortho_init
    return VariantPolicy, {"variant": variant}


def parameter_counts(policy: ActorCriticPolicy) -> dict[str, int]:
    """Trainable params: total (what the optimizer updates), actor (trunk + action head), critic."""
    def count(*modules: nn.Module) -> int:
        return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)

    extractor = policy.mlp_extractor
    return {
        "total": count(policy),
        "actor": count(extractor.policy_net, policy.action_net),
        "critic": count(extractor.value_net, policy.value_net),
    }
