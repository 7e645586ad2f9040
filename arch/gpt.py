"""The GPT of the public naive baseline: GQA attention with RoPE and QK-norm/gain, a swappable MLP slot,
residual mix back to the embedding x0, U-Net skips between the two halves, tied embeddings, logit softcap."""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arch.layers import CastedLinear, RMSNorm, casted_linear, zero_init
from arch.mlp import MixerConfig, build_mlp, parse_layer_spec

# Small per-channel gains: kept fp32, trained by Adam, never quantized (names as in the public baseline).
CONTROL_TENSOR_NAME_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes",
    "q_gain", "skip_weight", "skip_weights",
)


class Rotary(nn.Module):
    """cos/sin tables for a sequence length, rebuilt on every call (a few kFLOPs). They are deliberately not
    cached: a table first built under torch.inference_mode (an eval before any training step, or before
    test-time training) is an inference tensor, and autograd refuses it in every later training step."""

    def __init__(self, dim: int, base: float):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)), persistent=False)

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        t = torch.arange(seq_len, device=device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq.to(device))
        return freqs.cos()[None, None].to(dtype), freqs.sin()[None, None].to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, rope_base: float, qk_gain_init: float):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"MODEL_DIM={dim} must be divisible by NUM_HEADS={num_heads}")
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"NUM_HEADS={num_heads} must be divisible by NUM_KV_HEADS={num_kv_heads}")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        if self.head_dim % 2 != 0:
            raise ValueError(f"head dim MODEL_DIM/NUM_HEADS={self.head_dim} must be even for RoPE")
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim, bias=False)
        self.c_k = CastedLinear(dim, kv_dim, bias=False)
        self.c_v = CastedLinear(dim, kv_dim, bias=False)
        self.proj = zero_init(CastedLinear(dim, dim, bias=False))
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(self.head_dim, rope_base)

    def forward(self, x: Tensor) -> Tensor:
        bsz, seqlen, dim = x.shape
        q = self.c_q(x).reshape(bsz, seqlen, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.c_k(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(x).reshape(bsz, seqlen, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = F.rms_norm(q, (q.size(-1),))
        k = F.rms_norm(k, (k.size(-1),))
        cos, sin = self.rotary(seqlen, x.device, q.dtype)
        q = apply_rotary(q, cos, sin) * self.q_gain.to(q.dtype)[None, :, None, None]
        k = apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.num_kv_heads != self.num_heads)
        return self.proj(y.transpose(1, 2).reshape(bsz, seqlen, dim))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, mlp: Callable[[], nn.Module], rope_base: float,
                 qk_gain_init: float):
        super().__init__()
        self.attn_norm = RMSNorm()
        self.mlp_norm = RMSNorm()
        self.attn = CausalSelfAttention(dim, num_heads, num_kv_heads, rope_base, qk_gain_init)
        self.mlp = mlp()  # built after the attention, as in the public baseline: same seed, same initial weights
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        # Row 0 weights the running residual, row 1 the embedding x0.
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(self.attn_norm(x))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    matmul_dtype: torch.dtype | None = None  # the tied head's product dtype (arch.layers.set_matmul_dtype)

    def __init__(
        self, vocab_size: int, num_layers: int, model_dim: int, num_heads: int, num_kv_heads: int,
        mlp_mult: float, tie_embeddings: bool, tied_embed_init_std: float, logit_softcap: float,
        rope_base: float, qk_gain_init: float, mlp_kind: str = "relu2",
        mlp_kind_layers: str = "all", mixer_config: MixerConfig | None = None,
    ):
        super().__init__()
        if logit_softcap <= 0.0:
            raise ValueError(f"LOGIT_SOFTCAP must be positive, got {logit_softcap}")
        self.tie_embeddings = tie_embeddings
        self.logit_softcap = logit_softcap
        self.tok_emb = nn.Embedding(vocab_size, model_dim)
        self.num_encoder_layers = num_layers // 2
        self.num_decoder_layers = num_layers - self.num_encoder_layers
        self.skip_weights = nn.Parameter(torch.ones(min(self.num_encoder_layers, self.num_decoder_layers), model_dim))
        # MLP_KIND goes to the layers MLP_KIND_LAYERS names; the others keep the relu2 baseline.
        self.mlp_kind_layers = parse_layer_spec(mlp_kind_layers, num_layers)
        self.blocks = nn.ModuleList(
            Block(model_dim, num_heads, num_kv_heads,
                  functools.partial(build_mlp, mlp_kind if i in self.mlp_kind_layers else "relu2", model_dim, mlp_mult, mixer_config),
                  rope_base, qk_gain_init)
            for i in range(num_layers)
        )
        self.final_norm = RMSNorm()
        self.lm_head = None if tie_embeddings else zero_init(CastedLinear(model_dim, vocab_size, bias=False))
        if tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=tied_embed_init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear) and getattr(module, "_zero_init", False):
                nn.init.zeros_(module.weight)

    def hidden(self, input_ids: Tensor) -> Tensor:
        x = F.rms_norm(self.tok_emb(input_ids), (self.tok_emb.embedding_dim,))
        x0 = x
        skips: list[Tensor] = []
        # The first half stores skips; the second half consumes them in reverse order.
        for i in range(self.num_encoder_layers):
            x = self.blocks[i](x, x0)
            skips.append(x)
        for i in range(self.num_decoder_layers):
            if skips:
                x = x + self.skip_weights[i].to(x.dtype) * skips.pop()
            x = self.blocks[self.num_encoder_layers + i](x, x0)
        return self.final_norm(x)

    def forward_logits(self, input_ids: Tensor) -> Tensor:
        """Softcapped logits (B, T, V); position t sees only tokens <= t."""
        h = self.hidden(input_ids)
        proj = casted_linear(h, self.tok_emb.weight, None, self.matmul_dtype) if self.lm_head is None else self.lm_head(h)
        return self.logit_softcap * torch.tanh(proj / self.logit_softcap)

    def forward(self, input_ids: Tensor, target_ids: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy in nats, full softmax over the vocabulary: the mean, or per target with reduction='none'."""
        logits = self.forward_logits(input_ids)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target_ids.reshape(-1), reduction=reduction)
        return loss.view_as(target_ids) if reduction == "none" else loss
