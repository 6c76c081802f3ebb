"""Demo segmentation data in ADE20K layout (mmseg ``ADE20KDataset``, ``reduce_zero_label``).

Outdoor scenes with stuff and objects at very different scales: sky and grass split by a
horizon, large buildings, mid-size trees and cars, small people, and unlabelled clutter.
Annotation PNGs hold ADE20K's own class values (0 = "other", ignored after the zero-label
reduction; 2 building, 3 sky, 5 tree, 10 grass, 13 person, 21 car)::

    root/images/training/ADE_train_00000001.jpg    root/annotations/training/ADE_train_00000001.png
    root/images/validation/ADE_val_00000001.jpg    root/annotations/validation/ADE_val_00000001.png

A config selects the classes with ``metainfo=dict(classes=DEMO_CLASSES)``; mmseg then maps
the ADE20K values onto 0..5 through its label map.
"""
import os
import os.path as osp

import cv2
import numpy as np

from .base import DemoDataset
from .shapes import paint, shape_mask, smooth_noise, textured_background

#: ADE20K class name -> value in ADE20K annotation PNGs (index in ADE20K's class list + 1).
ADE_VALUES = {'building': 2, 'sky': 3, 'tree': 5, 'grass': 10, 'person': 13, 'car': 21}
DEMO_CLASSES = ('building', 'sky', 'tree', 'grass', 'person', 'car')  # ADE20K order


class ADE20KScenes(DemoDataset):
    name = 'ade20k'
    version = 1
    sizes = dict(training=240, validation=60)
    image_size = 96

    def render(self, rng: np.random.Generator):
        """Returns (image (H, W, 3) uint8 RGB, label (H, W) uint8 ADE20K values)."""
        size = self.image_size
        yy, xx = np.mgrid[0:size, 0:size]
        horizon = (rng.uniform(0.35, 0.65) * size
                   + (smooth_noise(rng, 1, size, 4)[0] - 0.5) * size * 0.15)
        sky = yy < horizon[None, :]
        image = np.where(sky[..., None],
                         textured_background(rng, size, size, (rng.integers(60, 140),
                                                               rng.integers(130, 200), 235)),
                         textured_background(rng, size, size, (rng.integers(30, 90),
                                                               rng.integers(120, 190), 40)))
        label = np.where(sky, ADE_VALUES['sky'], ADE_VALUES['grass']).astype(np.uint8)
        ground = int(horizon.mean())

        def put(mask, value, color):
            paint(image, mask, color, rng)
            label[mask] = value

        for _ in range(rng.integers(0, 3)):  # buildings: large, standing on the horizon
            w, h = rng.uniform(0.2, 0.45) * size, rng.uniform(0.25, 0.6) * size
            x0 = rng.uniform(-0.1, 0.9) * size
            mask = (xx >= x0) & (xx < x0 + w) & (yy >= ground - h) & (yy < ground + 0.05 * size)
            put(mask, ADE_VALUES['building'], rng.integers(90, 170, 3))
            windows = mask & ((xx - int(x0)) % 6 < 2) & ((yy % 7) < 3)
            image[windows] = (image[windows] * 0.4).astype(np.uint8)
        for _ in range(rng.integers(0, 4)):  # trees: mid-size crowns on trunks
            r = rng.uniform(0.06, 0.14) * size
            cx, cy = rng.uniform(0, size), ground + rng.uniform(-0.05, 0.15) * size
            trunk = (abs(xx - cx) < max(1, r * 0.2)) & (yy > cy - r) & (yy < cy + 0.8 * r)
            put(trunk | shape_mask('circle', size, size, (cx, cy - 1.3 * r), r),
                ADE_VALUES['tree'], (rng.integers(10, 60), rng.integers(70, 120), 20))
        for _ in range(rng.integers(0, 3)):  # cars: small-to-mid boxes on the grass
            w = rng.uniform(0.08, 0.2) * size
            x0, y0 = rng.uniform(0, size - w), rng.uniform(ground + 2, size - w * 0.4)
            mask = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + w * 0.4)
            put(mask, ADE_VALUES['car'], (rng.integers(150, 255), rng.integers(0, 60),
                                          rng.integers(0, 60)))
        for _ in range(rng.integers(0, 5)):  # people: small upright ellipses
            h = rng.uniform(0.04, 0.1) * size
            cx, cy = rng.uniform(0, size), rng.uniform(ground, size)
            mask = shape_mask('ellipse', size, size, (cx, cy), h, np.pi / 2)
            put(mask, ADE_VALUES['person'], (rng.integers(200, 256), rng.integers(150, 210),
                                             rng.integers(100, 160)))
        for _ in range(rng.integers(0, 2)):  # clutter: "other" (value 0, ignored)
            mask = shape_mask('star', size, size, rng.uniform(0, size, 2),
                              rng.uniform(0.03, 0.08) * size, rng.uniform(0, np.pi))
            put(mask, 0, rng.integers(0, 256, 3))
        return image, label

    def generate(self, root: str, rng: np.random.Generator) -> None:
        for split, count in self.sizes.items():
            prefix = 'ADE_train' if split == 'training' else 'ADE_val'
            for folder in ('images', 'annotations'):
                os.makedirs(osp.join(root, folder, split))
            for index in range(1, count + 1):
                image, label = self.render(rng)
                stem = f'{prefix}_{index:08d}'
                cv2.imwrite(osp.join(root, 'images', split, stem + '.jpg'), image[..., ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                cv2.imwrite(osp.join(root, 'annotations', split, stem + '.png'), label)
