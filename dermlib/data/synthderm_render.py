"""Drawing for SynthDerm (synthetic data): one lesion image from its ground-truth attributes and a source's look.

Everything is vectorised numpy on float32 RGB in [0, 255]; skimage.draw supplies the thin structures (dots,
streaks, vessels, hair, ruler ticks). `render` is pure: the same lesion, spec and random generator give the
same pixels. The attributes it draws are exactly those in the manifest's `attributes`, so notes can be audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.draw import bezier_curve, disk, line_aa

# Appearance of each ground-truth colour (RGB), as seen through a dermoscope / camera.
COLOR_RGB: dict[str, tuple[float, float, float]] = {
    "light brown": (176, 121, 80),
    "dark brown": (98, 58, 36),
    "black": (34, 26, 26),
    "blue-gray": (108, 122, 150),
    "red": (190, 58, 64),
    "white": (238, 232, 226),
}
# Skin tone by Fitzpatrick type I..VI.
SKIN_RGB: dict[int, tuple[float, float, float]] = {
    1: (243, 212, 196), 2: (230, 189, 164), 3: (206, 158, 122),
    4: (166, 118, 84), 5: (120, 82, 58), 6: (78, 54, 40),
}
BACKGROUND_RGB = [(62, 88, 122), (70, 112, 84), (150, 150, 148), (200, 196, 188)]  # cloth, drape, wall, paper
MAX_RADIUS = 0.32  # largest mean lesion radius, as a fraction of the shorter image side
_MAIN_ORDER = ["light brown", "dark brown", "red", "blue-gray", "black", "white"]


@dataclass(frozen=True)
class Lesion:
    """Ground truth of one lesion: what the image must show."""

    asymmetry: int  # 0, 1 or 2 axes of asymmetry
    border: str  # "regular" | "irregular"
    colors: tuple[str, ...]
    structures: tuple[str, ...]
    diameter_mm: float
    fitzpatrick: int  # true skin type (drawn even when the manifest hides it)
    shape_seed: int  # fixes the outline and colour layout, shared by every image of the lesion


@lru_cache(maxsize=64)
def _upsampler(n: int, cells: int) -> np.ndarray:
    """n x (cells + 2) matrix that smoothly interpolates a coarse random grid (Gaussian kernel, rows sum to 1)."""
    pos = (np.arange(n) + 0.5) / n * cells + 0.5
    weights = np.exp(-0.5 * ((pos[:, None] - np.arange(cells + 2)[None, :]) / 0.7) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth random field (zero mean, unit std): a `cells`-wide random grid, upsampled by two small matmuls."""
    h, w = shape
    grid = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    field = _upsampler(h, cells) @ grid @ _upsampler(w, cells).T
    return (field - field.mean()) / (field.std() + 1e-6)


def _outline(lesion: Lesion, radius_px: float, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lesion radius as a function of angle: even harmonics only (symmetric), odd cos / sin terms break one /
    two axes of symmetry, high harmonics make the border irregular."""
    r = 1.0 + rng.uniform(0.0, 0.18) * np.cos(2 * theta)  # elongation keeps both mirror axes
    if lesion.asymmetry >= 1:  # cos(k theta), k odd: mirror-symmetric about x only
        r = r + rng.uniform(0.14, 0.24) * np.cos(theta) + rng.uniform(0.0, 0.08) * np.cos(3 * theta)
    if lesion.asymmetry >= 2:  # sin terms: no mirror axis left
        r = r + rng.uniform(0.12, 0.22) * np.sin(theta) + rng.uniform(0.04, 0.1) * np.sin(2 * theta)
    amplitude = rng.uniform(0.1, 0.18) if lesion.border == "irregular" else rng.uniform(0.0, 0.015)
    ks = rng.integers(3, 16, size=6)
    weights = rng.dirichlet(np.ones(6)) * amplitude
    for k, a, phase in zip(ks, weights, rng.uniform(0, 2 * np.pi, 6)):
        r = r + 1.6 * a * np.cos(k * theta + phase)
    return radius_px * np.clip(r, 0.35, None)


def _pick_region(field: np.ndarray, available: np.ndarray, fraction: float) -> np.ndarray:
    """The `fraction` of `available` pixels where `field` is highest (empty when nothing is available)."""
    if available.sum() < 4:
        return np.zeros_like(available)
    cut = np.quantile(field[available], 1.0 - fraction)
    return available & (field >= cut)


def _blend(img: np.ndarray, mask: np.ndarray, rgb: tuple[float, float, float], opacity: float | np.ndarray) -> None:
    """In place: img = img * (1 - a) + rgb * a where a = mask * opacity."""
    a = (mask.astype(np.float32) * opacity)[..., None]
    img *= 1.0 - a
    img += a * np.asarray(rgb, np.float32)


def _points_inside(rng: np.random.Generator, inside: np.ndarray, n: int) -> np.ndarray:
    """Up to n random (row, col) points where `inside` is True."""
    rows, cols = np.nonzero(inside)
    if len(rows) == 0:
        return np.zeros((0, 2), int)
    pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    return np.stack([rows[pick], cols[pick]], axis=1)


def _draw_lines(img: np.ndarray, segments: list[tuple[float, float, float, float]], rgb: tuple, opacity: float,
                thick: bool) -> None:
    """Anti-aliased line segments (r0, c0, r1, c1); `thick` draws a second, offset copy."""
    h, w, _ = img.shape
    mask = np.zeros((h, w), np.float32)
    for r0, c0, r1, c1 in segments:
        for off in ((0, 0), (1, 0)) if thick else ((0, 0),):
            rr, cc, val = line_aa(int(r0) + off[0], int(c0) + off[1], int(r1) + off[0], int(c1) + off[1])
            ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            np.maximum.at(mask, (rr[ok], cc[ok]), val[ok].astype(np.float32))
    _blend(img, mask, rgb, opacity)


def _structures(img: np.ndarray, lesion: Lesion, inside: np.ndarray, alpha: np.ndarray, geom: dict[str, Any],
                rng: np.random.Generator) -> None:
    """Draw each dermoscopic structure of the lesion, in colours the lesion declares."""
    h, w, _ = img.shape
    scale = min(h, w) / 128.0
    dark = next((c for c in ("black", "dark brown") if c in lesion.colors), "dark brown")
    radius, cy, cx, rot = geom["radius"], geom["cy"], geom["cx"], geom["rot"]
    yy, xx = geom["yy"], geom["xx"]
    s = set(lesion.structures)
    if "blue-whitish veil" in s:
        veil = _pick_region(smooth_noise(rng, (h, w), 4) - geom["d"], inside, rng.uniform(0.2, 0.35))
        _blend(img, veil, (150, 162, 188), 0.75)
    if "regression structures" in s:
        reg = _pick_region(smooth_noise(rng, (h, w), 5), inside, rng.uniform(0.15, 0.25))
        _blend(img, reg, COLOR_RGB["white"], 0.7)
        pepper = reg & (rng.random((h, w)) < 0.12)
        _blend(img, pepper, COLOR_RGB["blue-gray"], 0.8)
    if "pigment network" in s:
        period = max(3.0, 5.5 * scale) * (1.0 + 0.35 * smooth_noise(rng, (h, w), 3) * (lesion.border == "irregular"))
        warp_y = 1.2 * scale * smooth_noise(rng, (h, w), 6)
        warp_x = 1.2 * scale * smooth_noise(rng, (h, w), 6)
        u = np.abs(np.sin(np.pi * (yy + warp_y) / period))
        v = np.abs(np.sin(np.pi * (xx + warp_x) / period))
        lines = (np.minimum(u, v) < 0.32) & (alpha > 0.35)
        network_rgb = COLOR_RGB[dark] if dark in lesion.colors else COLOR_RGB["dark brown"]
        _blend(img, lines, network_rgb, 0.65 * np.clip(alpha, 0, 1))
    if "dots/globules" in s:
        choices = [c for c in ("black", "dark brown", "blue-gray", "red") if c in lesion.colors] or ["dark brown"]
        pts = _points_inside(rng, alpha > 0.6, int(rng.integers(6, 22)))
        for (r, c), col in zip(pts, rng.choice(len(choices), size=len(pts))):
            rr, cc = disk((r, c), rng.uniform(0.9, 2.4) * scale, shape=(h, w))
            dot = np.zeros((h, w), bool)
            dot[rr, cc] = True
            _blend(img, dot, COLOR_RGB[choices[col]], 0.9)
    if "streaks" in s:
        centre = rng.uniform(0, 2 * np.pi)
        spread = np.pi if lesion.asymmetry < 2 else rng.uniform(0.6, 1.4)
        angles = centre + rng.uniform(-spread, spread, int(rng.integers(8, 18)))
        rad = np.array([geom["r_of"](a - rot) for a in angles])
        segs = [(cy + 0.78 * r * np.sin(a), cx + 0.78 * r * np.cos(a), cy + 1.12 * r * np.sin(a),
                 cx + 1.12 * r * np.cos(a)) for a, r in zip(angles, rad)]
        _draw_lines(img, segs, COLOR_RGB[dark], 0.85, thick=scale >= 1.2)
    if "vascular structures" in s:
        segs = []
        for start in _points_inside(rng, alpha > 0.5, int(rng.integers(3, 7))):
            pos, heading = start.astype(float), rng.uniform(0, 2 * np.pi)
            for _ in range(int(rng.integers(2, 5))):
                heading += rng.normal(0, 0.6)
                step = rng.uniform(0.12, 0.3) * radius
                nxt = pos + step * np.array([np.sin(heading), np.cos(heading)])
                segs.append((pos[0], pos[1], nxt[0], nxt[1]))
                pos = nxt
        _draw_lines(img, segs, (168, 26, 40), 0.9, thick=scale >= 1.2)


def render(lesion: Lesion, spec: dict[str, Any], shape: tuple[int, int], rng: np.random.Generator) -> tuple[
        np.ndarray, list[int]]:
    """Draw one image (uint8 HxWx3) of `lesion` in the look of a source `spec`; also return the lesion's box
    [x0, y0, x1, y1] in pixels (what a manual bounding box would be)."""
    h, w = shape
    shape_rng = np.random.default_rng(lesion.shape_seed)  # same lesion, same outline and colour layout
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mm_per_px = spec["field_mm"] / w
    radius = min(0.5 * lesion.diameter_mm / mm_per_px, MAX_RADIUS * min(h, w))
    cy = h / 2 + rng.uniform(-0.08, 0.08) * h
    cx = w / 2 + rng.uniform(-0.08, 0.08) * w
    rot = rng.uniform(0, 2 * np.pi)  # a new view of the lesion: rotated, shifted
    theta = np.arctan2(yy - cy, xx - cx) - rot
    outline_rng = np.random.default_rng(lesion.shape_seed + 1)
    r_theta = _outline(lesion, radius, theta, outline_rng)

    def r_of(angle: float) -> float:
        """Outline radius at one angle: the outline's random terms come only from its seed, so re-seeding
        reproduces exactly the outline drawn above (used to start streaks at the border)."""
        return float(_outline(lesion, radius, np.array([angle]), np.random.default_rng(lesion.shape_seed + 1))[0])

    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r_theta
    edge = 0.06 if lesion.border == "irregular" else 0.14
    alpha = np.clip((1.0 - d) / edge, 0.0, 1.0)
    inside = alpha > 0.5

    # skin
    skin = np.asarray(SKIN_RGB[lesion.fitzpatrick], np.float32)
    if spec["modality"] == "dermoscopic":
        skin = 0.8 * skin + 0.2 * np.array([235, 170, 160], np.float32)  # dermoscope: pinker, brighter
    img = np.empty((h, w, 3), np.float32)
    img[:] = skin
    img *= (1.0 + 0.03 * smooth_noise(rng, (h, w), 12))[..., None]

    # lesion colours: main colour everywhere, secondary colours in disjoint regions (each clearly visible)
    body = np.empty((h, w, 3), np.float32)
    veil, regression = "blue-whitish veil" in lesion.structures, "regression structures" in lesion.structures
    covered = ({"blue-gray", "white"} if veil else set()) | ({"white"} if regression else set())  # drawn by those
    todo = [c for c in _MAIN_ORDER if c in lesion.colors]
    main = todo[0]
    body[:] = COLOR_RGB[main]
    available = inside.copy()
    ramp = np.cos(rot) * (xx - cx) / max(radius, 1) if lesion.asymmetry else 0.0
    for color in todo[1:]:
        if color in covered:
            continue
        field = smooth_noise(shape_rng, (h, w), 5) + 1.5 * ramp
        if color in ("white", "blue-gray"):
            field = field - 1.5 * d  # central
        elif color == "red":
            field = field + 1.0 * d  # peripheral erythema
        region = _pick_region(field, available, shape_rng.uniform(0.16, 0.3))
        body[region] = COLOR_RGB[color]
        available &= ~region
    body = gaussian_filter(body, sigma=(0.8, 0.8, 0))
    body *= (1.0 + 0.06 * smooth_noise(shape_rng, (h, w), 10))[..., None]
    body = 0.88 * body + 0.12 * skin  # lesions keep a little of the surrounding skin tone
    img = img * (1 - alpha[..., None]) + body * alpha[..., None]
    geom = {"radius": radius, "cy": cy, "cx": cx, "rot": rot, "yy": yy, "xx": xx, "d": d, "r_of": r_of}
    _structures(img, lesion, inside, alpha, geom, shape_rng)
    rows, cols = np.nonzero(inside)
    box = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1] if len(rows) else [0, 0, w, h]

    _artefacts(img, spec, rng, mm_per_px, cy, cx, radius)
    # acquisition: colour cast, blur, noise
    img *= np.asarray(spec["cast"], np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    blur = spec["blur"] * rng.uniform(0.6, 1.4)
    if blur > 0.05:
        img = gaussian_filter(img, sigma=(blur, blur, 0))
    img += rng.normal(0.0, spec["noise"], img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), box


def _artefacts(img: np.ndarray, spec: dict[str, Any], rng: np.random.Generator, mm_per_px: float, cy: float,
               cx: float, radius: float) -> None:
    """Hair, ruler ticks, vignetting and the dermoscope's black field-of-view (dermoscopic); lighting gradient and
    background (clinical). In place."""
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if spec["modality"] == "clinical":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2)) / max(h, w)
        img *= (1.0 + rng.uniform(0.2, 0.5) * ramp)[..., None]
        if rng.random() < spec.get("background", 0.0):
            side = rng.integers(4)
            u = [yy / h, 1 - yy / h, xx / w, 1 - xx / w][side]
            wave = 0.04 * smooth_noise(rng, (h, w), 3)
            bg = (u + wave) < rng.uniform(0.1, 0.22)
            bg &= np.hypot(yy - cy, xx - cx) > 1.3 * radius  # never over the lesion
            colour = BACKGROUND_RGB[int(rng.integers(len(BACKGROUND_RGB)))]
            _blend(img, bg, colour, 1.0)
        return
    hairs = int(rng.poisson(spec.get("hair", 0.0) * 6))
    if hairs:
        mask = np.zeros((h, w), bool)
        for _ in range(hairs):
            pts = rng.uniform(0, 1, (3, 2)) * [h, w]
            rr, cc = bezier_curve(*pts[0].astype(int), *pts[1].astype(int), *pts[2].astype(int), 1.0, shape=(h, w))
            mask[rr, cc] = True
            if min(h, w) >= 160:
                mask[np.clip(rr + 1, 0, h - 1), cc] = True
        _blend(img, mask, (42, 30, 24), 0.85)
    if rng.random() < spec.get("ruler", 0.0):
        ticks = np.zeros((h, w), bool)
        step = max(2.0, 1.0 / mm_per_px)  # one tick per millimetre: the ruler gives the scale
        for i, x in enumerate(np.arange(0.1 * w, 0.9 * w, step)):
            length = int(0.07 * h) if i % 5 == 0 else int(0.035 * h)
            ticks[int(0.9 * h) - length:int(0.9 * h), int(x)] = True
        _blend(img, ticks, (50, 50, 55), 0.8)
    r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (0.25 * (h * h + w * w))
    img *= (1.0 - spec.get("vignette", 0.2) * r2)[..., None]
    if rng.random() < spec.get("fov", 0.0):
        fov_r = rng.uniform(*spec.get("fov_radius", (0.42, 0.56))) * min(h, w)
        fy, fx = h / 2 + rng.uniform(-0.03, 0.03) * h, w / 2 + rng.uniform(-0.03, 0.03) * w
        outside = np.hypot(yy - fy, xx - fx) > fov_r
        _blend(img, outside, (8, 8, 8), 0.97)
