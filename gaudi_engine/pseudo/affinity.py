"""Affinity refinement from dense features (AffinityNet/PSA-style, for towers without attention).

A_ij = softmax_j(beta * cos(f_i, f_j)) over a local (2r+1)^2 window at feature resolution
(dilated so the window sees a wide context cheaply); the class maps are propagated
CAM <- A^t CAM. Pixels with similar features end up with similar scores, which fills the
object's extent and trims leaks across feature edges.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def local_affinity(feats: torch.Tensor, radius: int = 2, beta: float = 10.0,
                   dilation: int = 1) -> torch.Tensor:
    """Row-stochastic affinity [B, (2r+1)^2, h*w] of L2-normalised features [B, D, h, w]."""
    b, d, h, w = feats.shape
    k = 2 * radius + 1
    pad = radius * dilation
    f = F.normalize(feats.float(), dim=1)
    fp = F.pad(f, (pad, pad, pad, pad))
    # one shifted dot product per offset (same order as F.unfold): no [D*k*k, h*w] tensor
    cos = torch.stack([(f * fp[:, :, i * dilation:i * dilation + h, j * dilation:j * dilation + w]).sum(1)
                       for i in range(k) for j in range(k)], 1).view(b, k * k, h * w)
    # Out-of-image neighbours (zero padding) must not take part in the softmax.
    valid = F.unfold(torch.ones(1, 1, h, w, device=f.device), kernel_size=k, dilation=dilation,
                     padding=pad).view(1, k * k, h * w) > 0.5
    logits = (beta * cos).masked_fill(~valid, float("-inf"))
    return torch.softmax(logits, dim=1)


def propagate(cams: torch.Tensor, aff: torch.Tensor, radius: int = 2, dilation: int = 1,
              iters: int = 3) -> torch.Tensor:
    """Apply CAM <- A CAM `iters` times. cams [B, K, h, w], aff from `local_affinity`."""
    b, kk, h, w = cams.shape
    k = 2 * radius + 1
    pad = radius * dilation
    out = cams.float()
    for _ in range(iters):
        nb = F.unfold(out, kernel_size=k, dilation=dilation, padding=pad).view(b, kk, k * k, h * w)
        out = (nb * aff.unsqueeze(1)).sum(2).view(b, kk, h, w)
    return out


def refine(cams: torch.Tensor, feats: torch.Tensor, radius: int = 2, beta: float = 10.0,
           iters: int = 3, dilations: tuple[int, ...] = (1, 2)) -> torch.Tensor:
    """Refine [B, K, h, w] maps with affinities at several dilations (same resolution)."""
    out = cams.float()
    for dil in dilations:
        aff = local_affinity(feats, radius, beta, dil)
        out = propagate(out, aff, radius, dil, iters)
    return out
