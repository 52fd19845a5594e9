"""Visual prototypes sharpen a CAM that a tag on every picture spreads over the whole image."""
import torch

from gaudi_engine.pseudo.prototypes import kmeans_directions, prototype_maps


def test_a_spread_cam_is_cut_to_the_pixels_that_look_like_its_surest_ones():
    torch.manual_seed(0)
    h, w, d = 24, 16, 32
    hair_dir, street_a, street_b = torch.randn(3, d)
    feats = torch.empty(d, h, w)
    hair = torch.zeros(h, w, dtype=torch.bool)
    hair[2:6, 5:11] = True  # 6 % of the picture
    for y in range(h):
        for x in range(w):
            base = hair_dir if hair[y, x] else (street_a if x < 8 else street_b)
            feats[:, y, x] = base + 0.3 * torch.randn(d)
    cam = torch.full((1, h, w), 0.7)  # hair's text-CAM: high everywhere ...
    cam[0][hair] = 0.9  # ... a little higher on the hair
    sharp = prototype_maps(cam, feats)
    assert sharp.shape == (1, h, w)
    assert float(sharp[0][hair].min()) > 0.9 and float(sharp[0][~hair].max()) < 0.1


def test_kmeans_directions_finds_the_clusters():
    torch.manual_seed(1)
    a, b = torch.nn.functional.normalize(torch.randn(2, 8), dim=1)
    x = torch.nn.functional.normalize(torch.cat([a + 0.05 * torch.randn(20, 8), b + 0.05 * torch.randn(20, 8)]), dim=1)
    c = kmeans_directions(x, 2)
    best = (c @ torch.stack([a, b]).T).max(0).values
    assert bool((best > 0.95).all())
    assert kmeans_directions(x[:1], 4).shape == (1, 8)
