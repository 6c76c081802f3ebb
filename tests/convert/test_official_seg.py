"""tools/convert/official_seg_to_mmseg.py on checkpoints in the authors' PyConvSegNet layout."""
import pytest
import torch

from conftest import PYTHON, config, run, tool
from convert.reference_models import AuthorsPyConvSegNet, randomize


@pytest.mark.parametrize('backbone, cfg', [
    ('pyconvresnet', 'pyconvsegnet_pyconvr50_ade20k.py'),
    ('resnet', 'pyconvsegnet_r50_ade20k.py'),
])
def test_converted_segnet_gives_identical_logits(tmp_path, backbone, cfg):
    import pyconv_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.runner.checkpoint import load_checkpoint

    from pyconv_mm.analysis import build_model
    reference = randomize(AuthorsPyConvSegNet(50, num_classes=150, backbone=backbone))
    src, dst = tmp_path / 'segnet.pth', tmp_path / 'ours.pth'
    torch.save({'state_dict': {f'module.{k}': v for k, v in reference.state_dict().items()}},
               src)
    proc = run([PYTHON, tool('convert/official_seg_to_mmseg.py'), str(src), str(dst)])
    assert cfg in proc.stdout
    model = build_model(Config.fromfile(config(cfg)))
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    model.eval()
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        feats = model.extract_feat(x)
        ours_main, ours_aux = model.decode_head(feats), model.auxiliary_head(feats)
        ref_main, ref_aux = reference(x)
    torch.testing.assert_close(ours_main, ref_main, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours_aux, ref_aux, rtol=1e-4, atol=1e-4)


def test_refuses_a_classification_checkpoint(tmp_path):
    from convert.reference_models import AuthorsPyConvResNet
    src = tmp_path / 'imagenet.pth'
    torch.save(randomize(AuthorsPyConvResNet(50)).state_dict(), src)
    proc = run([PYTHON, tool('convert/official_seg_to_mmseg.py'), str(src),
                str(tmp_path / 'out.pth')], check=False)
    assert proc.returncode != 0 and 'not a PyConvSegNet checkpoint' in proc.stdout
