"""SynthBooru: procedural illustration-like scenes tagged with Danbooru general tags, each with a
ground-truth mask per tag (its *visible* pixels, occlusion respected; nested clothing lies inside
`1girl`). Used for the demo workspace and the quality benchmark; the pipeline never sees the GT.

Scenes are painted back to front on a float RGB canvas: flat colours, dark outlines, stripes,
dots, gradients, then noise. Palettes vary per scene (day / sunset / night skies, several grass
greens, ...) so that colour alone does not name a tag, while shape, texture and layout do.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SYNTH_TAGS: list[str] = [
    "sky", "cloud", "sun", "moon", "starry_sky", "mountain", "ocean", "beach", "grass", "tree",
    "house", "flower", "umbrella", "1girl", "long_hair", "dress", "hat", "simple_background",
]

TAG_DESCRIPTIONS: dict[str, list[str]] = {
    "sky": ["the sky above the horizon, a wide smooth area at the top of the picture",
            "a blue daytime sky, an orange sunset sky or a dark night sky filling the upper part",
            "open sky with a soft vertical colour gradient"],
    "cloud": ["a fluffy cloud made of overlapping round puffs floating in the sky",
              "white, grey or pinkish rounded clouds with dark outlines"],
    "sun": ["the sun, a bright yellow, orange or white disc in the sky",
            "a round glowing sun with an outline, high in the sky or near the horizon"],
    "moon": ["a pale crescent moon in a dark night sky",
             "the moon, a thin curved pale yellow or white crescent"],
    "starry_sky": ["a dark night sky sprinkled with many small bright star dots",
                   "a navy or purple night sky full of tiny white and yellow stars"],
    "mountain": ["a mountain, a large triangular peak rising from the horizon",
                 "grey, blue or purple mountains with pointed tops, sometimes with snowy caps"],
    "ocean": ["the ocean, a band of blue or teal water with horizontal wave stripes",
              "sea water stretching to the horizon, striped with light wave lines"],
    "beach": ["a sandy beach, a pale yellow or beige dotted sand strip below the sea",
              "the beach shore covered with speckled sand"],
    "grass": ["a grassy field, a green ground area with vertical stripe texture",
              "green or yellow-green grass covering the lower part of the picture"],
    "tree": ["a tree with a brown trunk and a round or pointed green crown of leaves",
             "a tree standing on the ground, a dark green leafy top on a thin trunk"],
    "house": ["a small house with a rectangular wall, a triangular roof and square windows",
              "a building with a pointed red, brown or blue roof and a door"],
    "flower": ["a small flower with round coloured petals around a yellow centre",
               "little red, pink, white or purple flowers in the grass"],
    "umbrella": ["a beach umbrella, a striped half disc canopy on a thin pole",
                 "a parasol with a dome of coloured stripes standing on the sand"],
    "1girl": ["a girl, one person standing: a round face, hair, body, arms and legs",
              "a single anime girl character with skin, hair and clothes",
              "one female character drawn with outlines and flat colours"],
    "long_hair": ["long hair flowing down behind the girl's shoulders to her waist",
                  "a long mane of hair framing the face and falling down the back"],
    "dress": ["a dress worn by the girl, a coloured garment flaring into a wide skirt",
              "a one piece dress covering the body from the shoulders to the knees, maybe striped"],
    "hat": ["a hat on the girl's head, a wide brim with a rounded crown",
            "a sun hat or a pointed witch hat sitting on top of the head"],
    "simple_background": ["a plain background of one flat colour or a simple gradient or pattern",
                          "an empty studio background behind the character, no scenery"],
}

_MIN_PIXELS = 12  # a tag whose visible area is smaller than this is dropped from the labels


class _Canvas:
    """A float RGB canvas plus one visible-pixel mask per tag, painted back to front."""

    def __init__(self, w: int, h: int, rng: np.random.Generator):
        self.w, self.h, self.rng = w, h, rng
        self.img = np.zeros((h, w, 3), np.float32)
        self.masks: dict[str, np.ndarray] = {}
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        self.x, self.y = xs / max(w, h), ys / max(w, h)  # square units: shapes keep their aspect
        self.outline = 1 if max(w, h) < 140 else 2
        self.ink = np.array([0.08, 0.07, 0.1], np.float32) * rng.uniform(0.5, 1.5)

    # -- shapes (boolean masks) --------------------------------------------------------------
    def ellipse(self, cx, cy, rx, ry) -> np.ndarray:
        return ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2 <= 1.0

    def rect(self, x0, y0, x1, y1) -> np.ndarray:
        return (self.x >= x0) & (self.x <= x1) & (self.y >= y0) & (self.y <= y1)

    def triangle(self, ax, ay, bx, by, cx, cy) -> np.ndarray:
        def side(px, py, qx, qy):
            return (qx - px) * (self.y - py) - (qy - py) * (self.x - px)
        d1, d2, d3 = side(ax, ay, bx, by), side(bx, by, cx, cy), side(cx, cy, ax, ay)
        neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
        pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
        return ~(neg & pos)

    # -- fills --------------------------------------------------------------------------------
    def texture(self, base: np.ndarray, kind: str, strength: float = 0.12,
                second: np.ndarray | None = None) -> np.ndarray:
        """A full-canvas fill: flat colour modulated by stripes / dots / gradient."""
        rng = self.rng
        if kind == "flat":
            return np.asarray(base, np.float32)
        col = np.broadcast_to(base, (self.h, self.w, 3)).astype(np.float32)
        if kind == "hstripes" or kind == "vstripes" or kind == "stripes":
            ang = {"hstripes": np.pi / 2, "vstripes": 0.0}.get(kind, rng.uniform(0, np.pi))
            freq = rng.uniform(25, 60)
            t = np.sin(freq * (self.x * np.cos(ang) + self.y * np.sin(ang)) + rng.uniform(0, 6.3))
            if second is not None:
                return np.where((t > 0)[..., None], col, second)
            return col * (1 + strength * np.sign(t)[..., None])
        if kind == "dots":
            p = rng.uniform(0.03, 0.06)
            d = ((self.x % p) - p / 2) ** 2 + ((self.y % p) - p / 2) ** 2 < (p * 0.22) ** 2
            return col * (1 - strength * d[..., None])
        if kind == "speckle":
            n = rng.random((self.h, self.w)) < 0.12
            return col * (1 - strength * n[..., None])
        if kind == "vgradient" and second is not None:
            t = np.clip(self.y / max(self.y.max(), 1e-6), 0, 1)[..., None]
            return col * (1 - t) + second * t
        return col.copy()

    def paint(self, m: np.ndarray, tags: list[str], fill: np.ndarray, outline: bool = True) -> None:
        """Paint `fill` where `m`; those pixels now belong to `tags` only (occluding the rest)."""
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size == 0:
            return
        # work inside the shape's bounding box (plus the outline margin): most shapes are small
        p = self.outline + 1
        sl = (slice(max(rows[0] - p, 0), rows[-1] + p + 1), slice(max(cols[0] - p, 0), cols[-1] + p + 1))
        mc, ic = m[sl], self.img[sl]
        ic[mc] = fill[sl][mc] if fill.ndim == 3 else fill
        for t, mk in self.masks.items():
            if t not in tags:
                mk[sl] &= ~mc
        for t in tags:
            if t not in self.masks:
                self.masks[t] = np.zeros_like(m)
            self.masks[t][sl] |= mc
        if outline:
            e = mc.copy()
            for _ in range(self.outline):
                e[1:, :] &= e[:-1, :]
                e[:-1, :] &= e[1:, :]
                e[:, 1:] &= e[:, :-1]
                e[:, :-1] &= e[:, 1:]
            ic[mc & ~e] = self.ink


def _rand_colour(rng: np.random.Generator, lo, hi) -> np.ndarray:
    return rng.uniform(np.array(lo, np.float32), np.array(hi, np.float32)).astype(np.float32)


def _sky(c: _Canvas, horizon: float) -> str:
    rng = c.rng
    mood = rng.choice(["day", "day", "sunset", "night"])
    if mood == "day":
        top, bot = _rand_colour(rng, (0.2, 0.45, 0.75), (0.45, 0.7, 1.0)), _rand_colour(rng, (0.6, 0.8, 0.9), (0.85, 0.95, 1.0))
    elif mood == "sunset":
        top, bot = _rand_colour(rng, (0.45, 0.25, 0.45), (0.75, 0.4, 0.65)), _rand_colour(rng, (0.9, 0.5, 0.2), (1.0, 0.75, 0.45))
    else:
        top, bot = _rand_colour(rng, (0.02, 0.03, 0.12), (0.12, 0.1, 0.3)), _rand_colour(rng, (0.1, 0.1, 0.3), (0.25, 0.2, 0.45))
    fill = c.texture(top, "vgradient", second=bot)
    m = c.y <= horizon
    tags = ["sky"]
    if mood == "night" and rng.random() < 0.75:
        stars = (rng.random((c.h, c.w)) < rng.uniform(0.006, 0.02)) & m
        fill[stars] = _rand_colour(rng, (0.85, 0.85, 0.6), (1.0, 1.0, 1.0))
        tags.append("starry_sky")
    c.paint(m, tags, fill, outline=False)
    return mood


def _clouds(c: _Canvas, horizon: float, mood: str) -> None:
    rng = c.rng
    for _ in range(rng.integers(1, 4)):
        cx, cy, s = rng.uniform(0.05, 0.95), rng.uniform(0.05, max(0.08, horizon - 0.12)), rng.uniform(0.05, 0.11)
        m = np.zeros_like(c.x, bool)
        for _ in range(rng.integers(3, 6)):
            m |= c.ellipse(cx + rng.uniform(-1.6, 1.6) * s, cy + rng.uniform(-0.4, 0.3) * s,
                           s * rng.uniform(0.6, 1.0), s * rng.uniform(0.45, 0.7))
        base = {"day": (0.92, 0.94, 0.98), "sunset": (0.98, 0.75, 0.75), "night": (0.45, 0.45, 0.55)}[mood]
        col = np.clip(np.array(base, np.float32) * rng.uniform(0.85, 1.05), 0, 1)
        c.paint(m, ["cloud"], c.texture(col, "flat"))


def _sun_or_moon(c: _Canvas, horizon: float, mood: str) -> None:
    rng = c.rng
    cx, cy, r = rng.uniform(0.12, 0.88), rng.uniform(0.06, max(0.1, horizon - 0.08)), rng.uniform(0.05, 0.1)
    if mood == "night":
        m = c.ellipse(cx, cy, r, r) & ~c.ellipse(cx + r * rng.uniform(0.35, 0.6), cy - r * 0.2, r, r)
        c.paint(m, ["moon"], c.texture(_rand_colour(rng, (0.9, 0.88, 0.6), (1.0, 1.0, 0.9)), "flat"))
    else:
        col = _rand_colour(rng, (1.0, 0.8, 0.1), (1.0, 1.0, 0.6)) if mood == "day" else _rand_colour(rng, (1.0, 0.4, 0.1), (1.0, 0.7, 0.3))
        c.paint(c.ellipse(cx, cy, r, r), ["sun"], c.texture(col, "flat"))


def _mountains(c: _Canvas, horizon: float) -> None:
    rng = c.rng
    col = _rand_colour(rng, (0.3, 0.3, 0.4), (0.55, 0.55, 0.75))
    for _ in range(rng.integers(1, 3)):
        px, ph, hw = rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.3), rng.uniform(0.2, 0.4)
        m = c.triangle(px - hw, horizon + 0.01, px, horizon - ph, px + hw, horizon + 0.01)
        fill = np.broadcast_to(col * rng.uniform(0.85, 1.1), (c.h, c.w, 3)).copy()
        snow = c.triangle(px - hw * 0.3, horizon - ph * 0.7, px, horizon - ph, px + hw * 0.3, horizon - ph * 0.7)
        if rng.random() < 0.5:
            fill[snow] = 0.95
        c.paint(m, ["mountain"], fill)


def _tree(c: _Canvas, gx: float, gy: float, s: float) -> None:
    rng = c.rng
    trunk = c.rect(gx - 0.12 * s, gy - 0.8 * s, gx + 0.12 * s, gy)
    c.paint(trunk, ["tree"], c.texture(_rand_colour(rng, (0.3, 0.18, 0.08), (0.5, 0.32, 0.15)), "vstripes", 0.1))
    green = _rand_colour(rng, (0.05, 0.3, 0.08), (0.3, 0.6, 0.25))
    if rng.random() < 0.5:
        crown = c.ellipse(gx, gy - 1.2 * s, 0.6 * s, 0.6 * s)
    else:
        crown = c.triangle(gx - 0.55 * s, gy - 0.6 * s, gx, gy - 2.0 * s, gx + 0.55 * s, gy - 0.6 * s)
    c.paint(crown, ["tree"], c.texture(green, "dots", 0.25))


def _house(c: _Canvas, gx: float, gy: float, s: float) -> None:
    rng = c.rng
    wall = c.rect(gx - s, gy - 1.1 * s, gx + s, gy)
    c.paint(wall, ["house"], c.texture(_rand_colour(rng, (0.75, 0.7, 0.55), (1.0, 0.95, 0.85)), "flat"))
    roof = c.triangle(gx - 1.25 * s, gy - 1.1 * s, gx, gy - 2.0 * s, gx + 1.25 * s, gy - 1.1 * s)
    c.paint(roof, ["house"], c.texture(_rand_colour(rng, (0.4, 0.1, 0.1), (0.8, 0.35, 0.3)) if rng.random() < 0.7
                                       else _rand_colour(rng, (0.1, 0.2, 0.4), (0.3, 0.4, 0.7)), "hstripes", 0.15))
    c.paint(c.rect(gx - 0.65 * s, gy - 0.8 * s, gx - 0.25 * s, gy - 0.45 * s), ["house"],
            c.texture(np.array([0.55, 0.75, 0.95], np.float32), "flat"))
    c.paint(c.rect(gx + 0.15 * s, gy - 0.6 * s, gx + 0.55 * s, gy), ["house"],
            c.texture(np.array([0.4, 0.25, 0.15], np.float32), "flat"))


def _flowers(c: _Canvas, top: float) -> None:
    rng = c.rng
    col = _rand_colour(rng, (0.7, 0.1, 0.2), (1.0, 0.6, 1.0)) if rng.random() < 0.8 else np.array([0.97, 0.97, 0.97], np.float32)
    for _ in range(rng.integers(2, 7)):
        fx, fy, r = rng.uniform(0.05, 0.95), rng.uniform(top + 0.05, 0.97), rng.uniform(0.012, 0.025)
        m = np.zeros_like(c.x, bool)
        for a in np.linspace(0, 2 * np.pi, 5, endpoint=False):
            m |= c.ellipse(fx + 1.3 * r * np.cos(a), fy + 1.3 * r * np.sin(a), r, r)
        c.paint(m, ["flower"], c.texture(col, "flat"), outline=False)
        c.paint(c.ellipse(fx, fy, r * 0.8, r * 0.8), ["flower"], c.texture(np.array([1.0, 0.85, 0.1], np.float32), "flat"), outline=False)


def _umbrella(c: _Canvas, gx: float, gy: float, s: float) -> None:
    rng = c.rng
    c.paint(c.rect(gx - 0.04 * s, gy - 1.3 * s, gx + 0.04 * s, gy), ["umbrella"],
            c.texture(np.array([0.85, 0.85, 0.8], np.float32), "flat"))
    canopy = c.ellipse(gx, gy - 1.3 * s, s, 0.55 * s) & (c.y <= gy - 1.3 * s)
    a, b = _rand_colour(rng, (0.6, 0.0, 0.0), (1.0, 0.5, 0.9)), _rand_colour(rng, (0.85, 0.85, 0.85), (1.0, 1.0, 1.0))
    c.paint(canopy, ["umbrella"], c.texture(a, "vstripes", second=b))


def _girl(c: _Canvas, cx: float, foot: float, height: float) -> list[str]:
    """A standing girl; returns the clothing/hair tags she got. Painted back to front so each
    part's mask is its visible pixels; every part also belongs to `1girl`."""
    rng = c.rng
    s = height
    head_y, head_r = foot - 0.86 * s, 0.1 * s
    hair_col = _rand_colour(rng, (0.05, 0.03, 0.02), (1.0, 0.9, 0.7)) if rng.random() < 0.7 else _rand_colour(rng, (0.3, 0.2, 0.6), (0.9, 0.6, 1.0))
    skin = _rand_colour(rng, (0.85, 0.65, 0.5), (1.0, 0.88, 0.78))
    extra: list[str] = []
    long_hair = rng.random() < 0.6
    if long_hair:  # behind everything else of her
        c.paint(c.ellipse(cx, head_y + 0.18 * s, 0.15 * s, 0.3 * s), ["long_hair", "1girl"], c.texture(hair_col, "vstripes", 0.08))
        extra.append("long_hair")
    legs = c.rect(cx - 0.06 * s, foot - 0.3 * s, cx - 0.015 * s, foot) | c.rect(cx + 0.015 * s, foot - 0.3 * s, cx + 0.06 * s, foot)
    arms = c.rect(cx - 0.17 * s, foot - 0.7 * s, cx - 0.12 * s, foot - 0.42 * s) | c.rect(cx + 0.12 * s, foot - 0.7 * s, cx + 0.17 * s, foot - 0.42 * s)
    neck = c.rect(cx - 0.03 * s, head_y, cx + 0.03 * s, foot - 0.7 * s)
    c.paint(legs | arms | neck, ["1girl"], c.texture(skin, "flat"))
    torso = c.rect(cx - 0.12 * s, foot - 0.74 * s, cx + 0.12 * s, foot - 0.42 * s)
    cloth = _rand_colour(rng, (0.1, 0.1, 0.1), (1.0, 1.0, 1.0))
    kind = rng.choice(["flat", "stripes", "dots"])
    if rng.random() < 0.65:
        skirt = c.triangle(cx - 0.2 * s, foot - 0.22 * s, cx, foot - 0.62 * s, cx + 0.2 * s, foot - 0.22 * s) | \
            (c.rect(cx - 0.2 * s, foot - 0.3 * s, cx + 0.2 * s, foot - 0.22 * s) & c.ellipse(cx, foot - 0.3 * s, 0.2 * s, 0.1 * s))
        c.paint(torso | skirt, ["dress", "1girl"], c.texture(cloth, kind, 0.2))
        extra.append("dress")
    else:  # shirt and shorts: clothing that is not a dress
        c.paint(torso, ["1girl"], c.texture(cloth, kind, 0.2))
        c.paint(c.rect(cx - 0.12 * s, foot - 0.44 * s, cx + 0.12 * s, foot - 0.3 * s), ["1girl"],
                c.texture(_rand_colour(rng, (0.1, 0.1, 0.3), (0.4, 0.4, 0.7)), "flat"))
    c.paint(c.ellipse(cx, head_y, head_r, head_r * 1.1), ["1girl"], c.texture(skin, "flat"))
    # eyes and fringe: small details drawn over the face
    for ex in (-0.4, 0.4):
        c.paint(c.ellipse(cx + ex * head_r, head_y + 0.1 * head_r, 0.14 * head_r, 0.22 * head_r), ["1girl"],
                c.texture(_rand_colour(rng, (0.05, 0.05, 0.2), (0.5, 0.4, 0.8)), "flat"), outline=False)
    fringe = c.ellipse(cx, head_y - 0.45 * head_r, 1.05 * head_r, 0.6 * head_r)
    c.paint(fringe, ["long_hair", "1girl"] if long_hair else ["1girl"], c.texture(hair_col, "flat"))
    if rng.random() < 0.4:
        hat_col = _rand_colour(rng, (0.1, 0.1, 0.1), (1.0, 0.95, 0.8))
        if rng.random() < 0.7:
            m = c.ellipse(cx, head_y - 0.7 * head_r, 2.0 * head_r, 0.35 * head_r) | \
                (c.ellipse(cx, head_y - 0.8 * head_r, 1.0 * head_r, 0.9 * head_r) & (c.y <= head_y - 0.7 * head_r))
        else:
            m = c.triangle(cx - 1.4 * head_r, head_y - 0.6 * head_r, cx + 0.3 * head_r, head_y - 3.2 * head_r,
                           cx + 1.4 * head_r, head_y - 0.6 * head_r)
        c.paint(m, ["hat", "1girl"], c.texture(hat_col, rng.choice(["flat", "hstripes"]), 0.2))
        extra.append("hat")
    return extra


def _outdoor(c: _Canvas, girl_p: float = 0.5) -> None:
    rng = c.rng
    horizon = rng.uniform(0.35, 0.6) * c.h / max(c.w, c.h)
    bottom = c.h / max(c.w, c.h)
    mood = _sky(c, horizon)
    seaside = rng.random() < 0.45
    if not seaside and rng.random() < 0.45:
        _mountains(c, horizon)
    if rng.random() < (0.75 if mood != "night" else 0.45):
        _sun_or_moon(c, horizon, mood)
    if mood != "night" or rng.random() < 0.3:
        if rng.random() < 0.7:
            _clouds(c, horizon, mood)
    dark = 0.45 if mood == "night" else 1.0
    ground_top = horizon
    if seaside:
        shore = horizon + rng.uniform(0.25, 0.55) * (bottom - horizon)
        if rng.random() < 0.06:  # rare: open sea without a beach
            shore = bottom + 1
        sea = _rand_colour(rng, (0.05, 0.25, 0.45), (0.2, 0.55, 0.8)) * dark
        c.paint((c.y > horizon) & (c.y <= shore), ["ocean"], c.texture(sea, "hstripes", 0.15), outline=False)
        sand = _rand_colour(rng, (0.85, 0.75, 0.5), (1.0, 0.95, 0.8)) * dark
        c.paint(c.y > shore, ["beach"], c.texture(sand, "speckle", 0.15), outline=False)
        ground_top = shore
    else:
        green = _rand_colour(rng, (0.15, 0.4, 0.05), (0.55, 0.8, 0.35)) * dark
        c.paint(c.y > horizon, ["grass"], c.texture(green, "vstripes", rng.uniform(0.06, 0.18)), outline=False)
        if rng.random() < 0.4:
            _flowers(c, horizon)
    things = []
    if not seaside:
        if rng.random() < 0.55:
            things.append("tree")
        if rng.random() < 0.35:
            things.append("house")
    elif ground_top < bottom and rng.random() < 0.55:
        things.append("umbrella")
    if rng.random() < girl_p:
        things.append("1girl")
    rng.shuffle(things)
    for t in things:
        gx = rng.uniform(0.15, 0.85) * c.w / max(c.w, c.h)
        gy = rng.uniform(max(ground_top, horizon + 0.08), bottom - 0.02) if ground_top < bottom else bottom
        if t == "tree":
            _tree(c, gx, gy, rng.uniform(0.08, 0.15))
        elif t == "house":
            _house(c, gx, gy, rng.uniform(0.08, 0.14))
        elif t == "umbrella":
            _umbrella(c, gx, gy, rng.uniform(0.12, 0.2))
        else:
            _girl(c, gx, min(gy + 0.05, bottom), rng.uniform(0.4, 0.7))


def _portrait(c: _Canvas) -> None:
    rng = c.rng
    a = _rand_colour(rng, (0.3, 0.3, 0.3), (1.0, 1.0, 1.0))
    kind = rng.choice(["flat", "vgradient", "dots", "stripes"])
    fill = c.texture(a, kind, 0.1, second=_rand_colour(rng, (0.3, 0.3, 0.3), (1.0, 1.0, 1.0)) if kind == "vgradient" else None)
    c.paint(np.ones_like(c.x, bool), ["simple_background"], fill, outline=False)
    bottom = c.h / max(c.w, c.h)
    _girl(c, rng.uniform(0.35, 0.65) * c.w / max(c.w, c.h), bottom * rng.uniform(1.0, 1.25), bottom * rng.uniform(0.85, 1.15))


def render_scene(seed: int, size: int | tuple[int, int] = 160, girl_p: float = 0.5
                 ) -> tuple[Image.Image, list[str], dict[str, np.ndarray]]:
    """One scene: (RGB image, its tags in SYNTH_TAGS order, {tag: visible-pixel bool mask}).
    `girl_p`: the chance an outdoor scene has a girl (portraits always do); 1.0 puts `1girl` on
    every picture, as Danbooru's most common tags are (issue 15 item 4's test)."""
    w, h = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    rng = np.random.default_rng(seed)
    c = _Canvas(w, h, rng)
    if rng.random() < 0.2:
        _portrait(c)
    else:
        _outdoor(c, girl_p)
    img = c.img + rng.normal(0, rng.uniform(0.005, 0.03), c.img.shape).astype(np.float32)
    img = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    masks = {t: c.masks[t] for t in SYNTH_TAGS if t in c.masks and c.masks[t].sum() >= _MIN_PIXELS}
    return img, list(masks), masks


def _scene_seed(seed: int, split: str | None, i: int) -> int:
    code = {None: 0, "train": 1, "test": 2}.get(split, sum(map(ord, split or "")) + 3)
    return int(np.random.SeedSequence([seed, code, i]).generate_state(1)[0])


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def generate(out_dir: str | Path, n: int, seed: int = 0, size: tuple[int, int] = (128, 192),
             split: str | None = None, write_gt: bool = True, girl_p: float = 0.5) -> dict[str, Any]:
    """Write `n` scenes: images/NAME.png + NAME.txt, gt/NAME/<tag>.png (0/255),
    tag_descriptions.json and manifest.csv. NAME = `[split_]%06d`, post_id = index + 1."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lo, hi = int(size[0]), int(size[1])
    rows, counts = [], {t: 0 for t in SYNTH_TAGS}
    for i in range(n):
        s = _scene_seed(seed, split, i)
        side_rng = np.random.default_rng(s ^ 0x5EED)
        w, h = (int(v) for v in side_rng.integers(lo, hi + 1, size=2))
        img, tags, masks = render_scene(s, (w, h), girl_p)
        name = f"{split}_{i:06d}" if split else f"{i:06d}"
        data = _png_bytes(img)
        (out / "images" / f"{name}.png").write_bytes(data)
        (out / "images" / f"{name}.txt").write_text(", ".join(tags) + "\n", encoding="utf-8")
        if write_gt:
            gdir = out / "gt" / name
            gdir.mkdir(parents=True, exist_ok=True)
            for t, m in masks.items():
                Image.fromarray(m.astype(np.uint8) * 255, "L").save(gdir / f"{t}.png", compress_level=1)
        for t in tags:
            counts[t] += 1
        rows.append({"post_id": i + 1, "image_path": f"images/{name}.png", "tags": " ".join(tags),
                     "md5": hashlib.md5(data).hexdigest(), "rating": "g", "width": w, "height": h})
    (out / "tag_descriptions.json").write_text(json.dumps(TAG_DESCRIPTIONS, indent=1), encoding="utf-8")
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        wr = csv.DictWriter(fh, fieldnames=["post_id", "image_path", "tags", "md5", "rating", "width", "height"])
        wr.writeheader()
        wr.writerows(rows)
    return {"out_dir": str(out), "n": n, "split": split, "seed": seed, "tag_counts": counts,
            "manifest": str(out / "manifest.csv"), "tag_descriptions": str(out / "tag_descriptions.json")}
