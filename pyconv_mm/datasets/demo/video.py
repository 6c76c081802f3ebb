"""Demo video data as mmaction2 raw frames (``RawframeDataset``) with annotation lists.

Six motion classes; the class is how a shape moves, not what it is. Shape, size (radius 8%..25%
of the frame), speed and background vary per clip; the shape stays in the frame::

    root/rawframes/train/clip_00000/img_00001.jpg ...   root/train_list.txt
    root/rawframes/val/clip_00000/img_00001.jpg ...     root/val_list.txt
    list lines: "clip_00000 <num_frames> <label>"
"""
import os
import os.path as osp

import cv2
import numpy as np

from .base import DemoDataset
from .shapes import distinct_color, paint, shape_mask, textured_background

DEMO_CLASSES = ('move_left', 'move_right', 'move_up', 'move_down', 'rotate', 'pulse')
ASYMMETRIC_SHAPES = ('triangle', 'bar', 'ellipse', 'star')


class KineticsMotions(DemoDataset):
    name = 'kinetics'
    version = 2
    sizes = dict(train=480, val=60)
    image_size = 48
    num_frames = 24

    def render(self, rng: np.random.Generator, label: int):
        """Returns a list of ``num_frames`` (H, W, 3) uint8 RGB frames."""
        size, motion = self.image_size, DEMO_CLASSES[label]
        background = textured_background(rng, size, size)
        kind = ASYMMETRIC_SHAPES[rng.integers(len(ASYMMETRIC_SHAPES))]
        radius = size * rng.uniform(0.08, 0.25)
        color = distinct_color(rng, background.reshape(-1, 3).mean(0))
        direction = np.array(dict(move_left=(-1, 0), move_right=(1, 0), move_up=(0, -1),
                                  move_down=(0, 1)).get(motion, (0, 0)), float)
        # the whole path stays inside the frame: travel <= size - 2 * radius
        speed = min(rng.uniform(0.5, 1.5) * size / 48, (size - 2 * radius) / (self.num_frames - 1))
        travel = direction * speed * (self.num_frames - 1)
        low = radius - np.minimum(travel, 0)
        high = size - radius - np.maximum(travel, 0)
        start = rng.uniform(low, np.maximum(low, high))
        angle0, spin = rng.uniform(0, np.pi), rng.choice([-1, 1]) * rng.uniform(0.12, 0.3)
        frequency = rng.uniform(0.5, 0.8)
        frames = []
        for t in range(self.num_frames):
            center = start + direction * speed * t
            angle = angle0 + (spin * t if motion == 'rotate' else 0)
            r = radius * (1 + 0.45 * np.sin(t * frequency) if motion == 'pulse' else 1)
            frame = background.copy()
            paint(frame, shape_mask(kind, size, size, center, r, angle), color, rng)
            frames.append(frame)
        return frames

    def generate(self, root: str, rng: np.random.Generator) -> None:
        for split, count in self.sizes.items():
            lines = []
            for index in range(count):
                label = index % len(DEMO_CLASSES)
                clip = f'clip_{index:05d}'
                folder = osp.join(root, 'rawframes', split, clip)
                os.makedirs(folder)
                for t, frame in enumerate(self.render(rng, label), start=1):
                    cv2.imwrite(osp.join(folder, f'img_{t:05d}.jpg'), frame[..., ::-1],
                                [cv2.IMWRITE_JPEG_QUALITY, 95])
                lines.append(f'{clip} {self.num_frames} {label}')
            with open(osp.join(root, f'{split}_list.txt'), 'w') as f:
                f.write('\n'.join(lines) + '\n')
