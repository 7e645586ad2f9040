"""Embedding-health report: how isotropic the vocabulary matrix is and how far its mean embedding drifted.

Metrics as in the Coupled Adam paper (arXiv 2502.08441, its analysis code), after Mu & Viswanath (2018):
- isotropy I(E) = min_c Z(c) / max_c Z(c), Z(c) = sum_i exp(c . e_i), c over the eigenvectors of E^T E.
  1 means no preferred direction. eigh returns each eigenvector with an arbitrary sign and Z(c) != Z(-c),
  so both signs are used, which makes the number reproducible. Computed in float64 via logsumexp, so large
  embeddings do not overflow.
- mean_norm_ratio = ||mu|| / mean_i ||e_i||, mu the mean embedding: Adam lets mu drift (a common direction
  shared by all tokens), Coupled Adam keeps it small.
- max_row_norm: a few very long rows (frequent tokens given large steps) also drive isotropy towards 0.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def embedding_health(E: Tensor) -> dict[str, float]:
    """isotropy, mean_norm (||mu||), row_norm (mean ||e_i||), max_row_norm and mean_norm_ratio of a [V, H] matrix."""
    if E.ndim != 2 or E.size(0) < 2:
        raise ValueError(f"embedding_health needs a [vocab, dim] matrix with at least 2 rows, got shape {tuple(E.shape)}")
    E = E.detach().to("cpu", torch.float64)
    _, eigvecs = torch.linalg.eigh(E.T @ E)
    directions = torch.cat((eigvecs, -eigvecs), dim=1)  # [H, 2H]
    log_z = torch.logsumexp(E @ directions, dim=0)
    mean_norm = E.mean(dim=0).norm().item()
    row_norms = E.norm(dim=1)
    row_norm = row_norms.mean().item()
    return {
        "isotropy": (log_z.min() - log_z.max()).exp().item(),
        "mean_norm": mean_norm,
        "row_norm": row_norm,
        "max_row_norm": row_norms.max().item(),
        "mean_norm_ratio": mean_norm / row_norm if row_norm > 0 else 0.0,
    }


def vocab_matrices(model: nn.Module) -> dict[str, Tensor]:
    """The model's [vocab, dim] matrices by state-dict name: the (tied) token embedding and an untied head."""
    out = {"tok_emb.weight": model.tok_emb.weight}
    if getattr(model, "lm_head", None) is not None:
        out["lm_head.weight"] = model.lm_head.weight
    return out


def embedding_health_lines(model: nn.Module) -> list[str]:
    """One log line per vocabulary matrix, e.g.
    `embedding_health tok_emb.weight isotropy:0.4210 mean_norm_ratio:0.0312 mean_norm:0.0123 row_norm:0.3941 max_row_norm:1.2`."""
    lines = []
    for name, E in vocab_matrices(model).items():
        h = embedding_health(E)
        lines.append(f"embedding_health {name} isotropy:{h['isotropy']:.4f} mean_norm_ratio:{h['mean_norm_ratio']:.4f} "
                     f"mean_norm:{h['mean_norm']:.4f} row_norm:{h['row_norm']:.4f} max_row_norm:{h['max_row_norm']:.4f}")
    return lines
