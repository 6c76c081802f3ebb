"""Demo classification data in ImageNet folder format (mmpretrain ``CustomDataset``/``ImageNet``).

Ten shape classes drawn at very different scales (radius 14%..48% of the image) over textured
backgrounds, one shape per image::

    root/train/<class>/<class>_00000.JPEG     root/val/<class>/...
    root/meta/train.txt  ("<class>/<file> <label>")   root/meta/val.txt   root/meta/classes.txt
"""
import os
import os.path as osp

import cv2
import numpy as np

from .base import DemoDataset
from .shapes import SHAPES, distinct_color, paint, shape_mask, textured_background


class ImageNetShapes(DemoDataset):
    name = 'imagenet'
    version = 2
    sizes = dict(train=2400, val=400)
    image_size = 48
    classes = tuple(sorted(SHAPES))

    def render(self, rng: np.random.Generator, label: int) -> np.ndarray:
        size = self.image_size
        image = textured_background(rng, size, size)
        radius = size * np.exp(rng.uniform(np.log(0.14), np.log(0.48)))
        margin = min(radius * 0.7, size / 2)
        center = rng.uniform(margin, size - margin, 2)
        # small rotations only: a square turned by 45 degrees would be a diamond
        mask = shape_mask(self.classes[label], size, size, center, radius, rng.uniform(-0.3, 0.3))
        paint(image, mask, distinct_color(rng, image.reshape(-1, 3).mean(0)), rng)
        return image

    def generate(self, root: str, rng: np.random.Generator) -> None:
        os.makedirs(osp.join(root, 'meta'))
        with open(osp.join(root, 'meta', 'classes.txt'), 'w') as f:
            f.write('\n'.join(self.classes) + '\n')
        for split, count in self.sizes.items():
            lines = []
            for index in range(count):
                label = index % len(self.classes)
                name = self.classes[label]
                rel_path = f'{name}/{name}_{index:05d}.JPEG'
                path = osp.join(root, split, rel_path)
                os.makedirs(osp.dirname(path), exist_ok=True)
                cv2.imwrite(path, self.render(rng, label)[..., ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                lines.append(f'{rel_path} {label}')
            with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
                f.write('\n'.join(lines) + '\n')
