"""Visual prototypes (VPL, SSR): a tag's look in this image, taken from the pixels its text-CAM is
surest of, against the looks of the pixels no present tag claims (the image's own background).

The text-CAM compares pixels with a *text* embedding, which a tag on nearly every picture (`hair`,
`1girl`) matches everywhere: Stage A never saw where it is absent. Pixel-to-pixel similarity in
the same dense features is sharper: the hair's surest pixels look like the rest of the hair and
not like the street. Per tag, the map becomes softmax(cos(f, proto_tag) / tau) against the
background prototypes (k-means of the image's least-claimed pixels), multiplied into the CAM.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kmeans_directions(x: torch.Tensor, k: int, iters: int = 8, seed: int = 0) -> torch.Tensor:
    """k unit vectors clustering the unit rows of x [N, D] (spherical k-means)."""
    k = max(1, min(k, len(x)))
    g = torch.Generator().manual_seed(seed)
    c = x[torch.randperm(len(x), generator=g)[:k]]
    for _ in range(iters):
        a = (x @ c.T).argmax(1)
        c = torch.stack([F.normalize(x[a == j].mean(0), dim=0) if (a == j).any() else c[j] for j in range(k)])
    return c


def prototype_maps(probs: torch.Tensor, feats: torch.Tensor, top: float = 0.05, background: float = 0.3,
                   n_background: int = 4, tau: float = 0.07) -> torch.Tensor:
    """[K, h, w] maps in 0..1 for CAM maps probs [K, h, w] on features feats [D, h, w] (same grid).
    `top`: share of the grid whose features make a tag's prototype (its highest CAM pixels);
    `background`: share of the grid, lowest in every tag's map, that make the background
    prototypes (`n_background` clusters)."""
    k, h, w = probs.shape
    f = F.normalize(feats.float().flatten(1), dim=0).T  # [N, D]
    p = probs.float().flatten(1)  # [K, N]
    n_top = max(1, int(round(top * p.shape[1])))
    protos = torch.stack([F.normalize(f[p[j].topk(n_top).indices].mean(0), dim=0) for j in range(k)])
    claim = p.max(0).values
    low = claim <= torch.quantile(claim, background)
    bg = kmeans_directions(f[low], n_background)
    tag_sim, bg_sim = (f @ protos.T) / tau, (f @ bg.T) / tau  # [N, K], [N, B]
    bg_lse = torch.logsumexp(bg_sim, 1, keepdim=True)
    out = torch.sigmoid(tag_sim - bg_lse)  # softmax of each tag against the background alone
    return out.T.reshape(k, h, w)
