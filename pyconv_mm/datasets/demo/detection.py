"""Demo detection data in COCO format (mmdet ``CocoDataset`` + ``CocoMetric``/pycocotools).

Shapes of three categories at very different scales (4%..60% of the image side), one to five
per image, over textured backgrounds::

    root/train2017/000000000001.jpg   root/annotations/instances_train2017.json
    root/val2017/000000000001.jpg     root/annotations/instances_val2017.json
"""
import json
import os
import os.path as osp

import cv2
import numpy as np

from .base import DemoDataset
from .shapes import distinct_color, paint, shape_mask, textured_background

DEMO_CLASSES = ('circle', 'square', 'triangle')


class COCOShapes(DemoDataset):
    name = 'coco'
    version = 1
    sizes = dict(train2017=300, val2017=60)
    image_size = 128

    def render(self, rng: np.random.Generator):
        """Returns (image (H, W, 3) uint8 RGB, list of (category index, mask))."""
        size = self.image_size
        image = textured_background(rng, size, size)
        taken = np.zeros((size, size), bool)
        objects = []
        for _ in range(rng.integers(1, 6)):
            label = int(rng.integers(len(DEMO_CLASSES)))
            radius = size * np.exp(rng.uniform(np.log(0.04), np.log(0.3)))
            center = rng.uniform(radius * 0.8, size - radius * 0.8, 2)
            mask = shape_mask(DEMO_CLASSES[label], size, size, center, radius,
                              rng.uniform(-0.3, 0.3))
            if (mask & taken).sum() > 0.1 * mask.sum() or mask.sum() < 9:
                continue  # keep objects mostly unoccluded and visible
            paint(image, mask, distinct_color(rng, image[mask].mean(0)), rng)
            objects = [(lbl, m & ~mask) for lbl, m in objects]
            objects.append((label, mask))
            taken |= mask
        return image, objects

    def generate(self, root: str, rng: np.random.Generator) -> None:
        os.makedirs(osp.join(root, 'annotations'))
        categories = [dict(id=i + 1, name=name, supercategory='shape')
                      for i, name in enumerate(DEMO_CLASSES)]
        annotation_id = 1
        for split, count in self.sizes.items():
            os.makedirs(osp.join(root, split))
            images, annotations = [], []
            for image_id in range(1, count + 1):
                image, objects = self.render(rng)
                file_name = f'{image_id:012d}.jpg'
                cv2.imwrite(osp.join(root, split, file_name), image[..., ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                images.append(dict(id=image_id, file_name=file_name, height=image.shape[0],
                                   width=image.shape[1]))
                for label, mask in objects:
                    ys, xs = np.nonzero(mask)
                    if len(xs) == 0:
                        continue
                    x0, y0 = int(xs.min()), int(ys.min())
                    w, h = int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1
                    annotations.append(dict(id=annotation_id, image_id=image_id,
                                            category_id=label + 1, bbox=[x0, y0, w, h],
                                            area=float(mask.sum()), iscrowd=0))
                    annotation_id += 1
            with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
                json.dump(dict(images=images, annotations=annotations, categories=categories), f)
