"""Procedural drawing for the demo datasets: textured backgrounds and shapes at any scale.

All functions take a ``numpy.random.Generator`` so that a seed fixes every pixel.
"""
from typing import Tuple

import cv2
import numpy as np

SHAPES = ('circle', 'square', 'triangle', 'diamond', 'cross', 'ring', 'star', 'hexagon',
          'ellipse', 'bar')


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int = 8) -> np.ndarray:
    """(H, W) float32 noise in [0, 1], smooth at roughly ``cells`` blobs per side."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def textured_background(rng: np.random.Generator, height: int, width: int,
                        base_color: Tuple[int, int, int] = None) -> np.ndarray:
    """(H, W, 3) uint8 background: a colour, smooth blotches and random stripes."""
    color = np.array(base_color if base_color is not None else rng.integers(40, 216, 3),
                     dtype=np.float32)
    blotches = smooth_noise(rng, height, width, int(rng.integers(3, 12)))[..., None]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, 16)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    image = color * (0.7 + 0.3 * blotches) + 25 * (stripes[..., None] - 0.5)
    image += rng.normal(0, 6, (height, width, 1))
    return image.clip(0, 255).astype(np.uint8)


def _polygon(center, radius, angle, n, inner=None) -> np.ndarray:
    points = []
    for i in range(n * (2 if inner else 1)):
        r = radius if (inner is None or i % 2 == 0) else radius * inner
        theta = angle + i * np.pi / (n if inner else n / 2)
        points.append((center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)))
    return np.round(np.array(points)).astype(np.int32)


def shape_mask(kind: str, height: int, width: int, center: Tuple[float, float], radius: float,
               angle: float = 0.0) -> np.ndarray:
    """(H, W) bool mask of a shape of ``kind`` (see :data:`SHAPES`) with circumradius ``radius``."""
    mask = np.zeros((height, width), np.uint8)
    cx, cy = center
    c = (int(round(cx)), int(round(cy)))
    r = max(radius, 1.0)
    if kind == 'circle':
        cv2.circle(mask, c, int(round(r)), 1, -1)
    elif kind == 'ring':
        cv2.circle(mask, c, int(round(r)), 1, -1)
        cv2.circle(mask, c, int(round(r * 0.55)), 0, -1)
    elif kind == 'ellipse':
        cv2.ellipse(mask, c, (int(round(r)), max(1, int(round(r * 0.45)))), np.degrees(angle),
                    0, 360, 1, -1)
    elif kind in ('square', 'diamond', 'triangle', 'hexagon', 'star'):
        sides = dict(square=4, diamond=4, triangle=3, hexagon=6, star=5)[kind]
        offset = dict(square=np.pi / 4, diamond=0.0).get(kind, -np.pi / 2)
        poly = _polygon((cx, cy), r, angle + offset, sides, inner=0.45 if kind == 'star' else None)
        cv2.fillPoly(mask, [poly], 1)
    elif kind in ('cross', 'bar'):
        half_w = r * (0.3 if kind == 'cross' else 0.25)
        bars = [angle] if kind == 'bar' else [angle, angle + np.pi / 2]
        for a in bars:
            d = np.array([np.cos(a), np.sin(a)])
            n = np.array([-d[1], d[0]])
            corners = [np.array([cx, cy]) + sx * r * d + sy * half_w * n
                       for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1)
    else:
        raise ValueError(f'unknown shape {kind!r}; valid: {SHAPES}')
    return mask.astype(bool)


def paint(image: np.ndarray, mask: np.ndarray, color, rng: np.random.Generator) -> None:
    """Fill ``mask`` of ``image`` in place with ``color`` plus a light texture."""
    if not mask.any():
        return
    shade = rng.normal(0, 8, (int(mask.sum()), 1))
    image[mask] = (np.asarray(color, np.float32)[None] + shade).clip(0, 255).astype(np.uint8)


def distinct_color(rng: np.random.Generator, avoid: np.ndarray, min_distance: float = 90.0):
    """A random RGB colour at least ``min_distance`` away from colour ``avoid``."""
    for _ in range(50):
        color = rng.integers(0, 256, 3)
        if np.linalg.norm(color.astype(float) - avoid.astype(float)) >= min_distance:
            return color
    return 255 - avoid
