"""Demo datasets: deterministic, cached, and read by each codebase's real dataset class."""
import hashlib
import os
import os.path as osp

import pytest

from pyconv_mm.datasets.demo import DEMO_DATASETS, prepare


def digest(root: str) -> str:
    sha = hashlib.sha1()
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            sha.update(osp.relpath(osp.join(folder, name), root).encode())
            with open(osp.join(folder, name), 'rb') as f:
                sha.update(f.read())
    return sha.hexdigest()


@pytest.mark.parametrize('name', sorted(DEMO_DATASETS))
def test_same_seed_same_bytes_other_seed_other_bytes(name, tmp_path):
    sizes = {split: 4 for split in DEMO_DATASETS[name].sizes}
    a = prepare(name, seed=1, cache_dir=str(tmp_path / 'a'), **sizes)
    b = prepare(name, seed=1, cache_dir=str(tmp_path / 'b'), **sizes)
    c = prepare(name, seed=2, cache_dir=str(tmp_path / 'a'), **sizes)
    assert digest(a) == digest(b) != digest(c)
    assert prepare(name, seed=1, cache_dir=str(tmp_path / 'a'), **sizes) == a  # cached


def test_unknown_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown demo dataset 'voc'; valid: \\['ade20k'"):
        prepare('voc', cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown splits \\['test'\\]"):
        prepare('imagenet', cache_dir=str(tmp_path), test=3)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    from pyconv_mm.datasets.demo import classification

    def boom(self, root, rng):
        open(osp.join(root, 'partial'), 'w').close()
        raise KeyboardInterrupt

    monkeypatch.setattr(classification.ImageNetShapes, 'generate', boom)
    with pytest.raises(KeyboardInterrupt):
        prepare('imagenet', cache_dir=str(tmp_path), train=2, val=2)
    assert os.listdir(tmp_path) == []


def test_imagenet_format_read_by_mmpretrain():
    from mmpretrain.datasets import CustomDataset
    root = prepare('imagenet')
    dataset = CustomDataset(data_root=root, data_prefix='train', pipeline=[])
    assert len(dataset.metainfo['classes']) == 10
    assert len(dataset) == DEMO_DATASETS['imagenet'].sizes['train']
    with open(osp.join(root, 'meta', 'val.txt')) as f:
        first = f.readline().split()
    assert first[0].endswith('.JPEG') and first[1] == '0'


def test_ade20k_format_read_by_mmseg():
    import numpy as np
    from mmseg.datasets import ADE20KDataset
    from mmseg.datasets.transforms import LoadAnnotations

    from pyconv_mm.datasets.demo.segmentation import DEMO_CLASSES
    dataset = ADE20KDataset(data_root=prepare('ade20k'), metainfo=dict(classes=DEMO_CLASSES),
                            data_prefix=dict(img_path='images/validation',
                                             seg_map_path='annotations/validation'),
                            pipeline=[LoadAnnotations()])
    assert len(dataset) == DEMO_DATASETS['ade20k'].sizes['validation']
    labels = np.unique(np.concatenate([np.unique(dataset[i]['gt_seg_map'])
                                       for i in range(len(dataset))]))
    # ADE20K values reduced by one and mapped onto the 6 demo classes; 0 ("other") -> 255
    assert set(labels) <= set(range(6)) | {255}
    assert {0, 1, 3} <= set(labels) and 255 in labels


def test_coco_format_read_by_mmdet():
    from mmdet.datasets import CocoDataset

    from pyconv_mm.datasets.demo.detection import DEMO_CLASSES
    root = prepare('coco')
    dataset = CocoDataset(data_root=root, ann_file='annotations/instances_train2017.json',
                          data_prefix=dict(img='train2017/'),
                          metainfo=dict(classes=DEMO_CLASSES), pipeline=[])
    assert len(dataset) > 0.9 * DEMO_DATASETS['coco'].sizes['train2017']
    sizes = [inst['bbox'][2] - inst['bbox'][0]  # x1y1x2y2
             for i in range(len(dataset)) for inst in dataset[i]['instances']]
    assert min(sizes) < 10 and max(sizes) > 50  # objects at very different scales


def test_kinetics_rawframes_read_by_mmaction():
    import pyconv_mm  # noqa: F401
    from mmaction.datasets import RawframeDataset

    from pyconv_mm.datasets.demo.video import KineticsMotions
    root = prepare('kinetics')
    dataset = RawframeDataset(ann_file=osp.join(root, 'val_list.txt'),
                              data_prefix=dict(img=osp.join(root, 'rawframes', 'val')),
                              pipeline=[])
    info = dataset[0]
    assert info['total_frames'] == KineticsMotions.num_frames and osp.isfile(
        osp.join(info['frame_dir'], 'img_00001.jpg'))
