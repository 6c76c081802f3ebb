"""PyConvResNet3D and the ResNet3D-50 baseline: Table 10 numbers, shapes, conventions,
inflation from 2D weights, a train step through mmaction2's registry."""
import pytest
import torch
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import complexity, config
from pyconv_mm.models.backbones import PyConvResNet, PyConvResNet3D


def test_baseline_resnet3d50_exact_params():
    assert complexity('resnet3d50_k400.py')['params'] == 46_999_760


def test_baseline_gflops_within_2_percent():
    assert complexity('resnet3d50_k400.py')['gflops'] == pytest.approx(93.26, rel=0.02)


def test_pyconvresnet3d50_matches_table10():
    info = complexity('pyconvresnet3d50_k400.py')
    assert info['params'] / 1e6 == pytest.approx(44.91, rel=0.005)
    assert info['gflops'] == pytest.approx(91.81, rel=0.02)


def test_stage_shapes_and_stage1_kernels():
    model = PyConvResNet3D(50, out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 16, 64, 64))
    # 16x224x224 gives 16x56x56, 16x28x28, 8x14x14, 4x7x7; here 64 / 4 = 16, ...
    assert [tuple(o.shape[1:]) for o in outs] == [(256, 16, 16, 16), (512, 16, 8, 8),
                                                  (1024, 8, 4, 4), (2048, 4, 2, 2)]
    kernels = [lvl.kernel_size for lvl in model.layer1[0].conv2.pyramid]
    assert kernels == [(3, 3, 3), (3, 5, 5), (5, 7, 7), (7, 9, 9)]


def test_frozen_stages_norm_eval_with_cp():
    model = PyConvResNet3D(18, frozen_stages=1, norm_eval=True, with_cp=True,
                           stem_channels=16, base_channels=16, pyramids=(
                               dict(kernel_sizes=[3, (3, 5, 5)], groups=[1, 2]),
                               dict(kernel_sizes=[3], groups=[1]),
                               dict(kernel_sizes=[3], groups=[1]),
                               dict(kernel_sizes=[3], groups=[1])))
    model.train()
    assert all(not p.requires_grad for p in model.layer1.parameters())
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))
    out = model(torch.randn(2, 3, 8, 32, 32, requires_grad=True))
    out.sum().backward()
    assert model.layer4[0].conv1.levels[0].weight.grad is not None


def test_inflated_weights_reproduce_2d_features_on_a_static_clip(tmp_path):
    torch.manual_seed(0)
    net2d = PyConvResNet(50, out_indices=(0, ))
    with torch.no_grad():
        for m in net2d.modules():
            if isinstance(m, _BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / 'backbone2d.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in net2d.state_dict().items()}}, path)
    net3d = PyConvResNet3D(50, out_indices=(0, ), pretrained=str(path), pretrained2d=True)
    net3d.init_weights()
    net2d.eval(), net3d.eval()
    frame = torch.randn(1, 3, 32, 32)
    clip = frame.unsqueeze(2).repeat(1, 1, 32, 1, 1)  # the same frame 32 times
    with torch.no_grad():
        out2d = net2d(frame)[0]
        out3d = net3d(clip)
    # away from the temporal borders (zero padding), every time step equals the 2D output
    torch.testing.assert_close(out3d[:, :, 16], out2d, rtol=1e-4, atol=1e-4)


def test_invalid_arguments():
    with pytest.raises(ValueError, match='depth=42'):
        PyConvResNet3D(42)
    with pytest.raises(ValueError, match='stem_kernel=\\(4, 7, 7\\)'):
        PyConvResNet3D(50, stem_kernel=(4, 7, 7))
    with pytest.raises(ValueError, match='temporal_strides has 3 entries'):
        PyConvResNet3D(50, temporal_strides=(1, 2, 2))


@pytest.mark.parametrize('cfg_path', ['resnet3d50_k400.py', 'pyconvresnet3d50_k400.py'])
def test_config_train_step(cfg_path):
    import pyconv_mm  # noqa: F401
    from mmaction.structures import ActionDataSample
    from mmengine.optim import OptimWrapper

    from pyconv_mm.analysis import build_model
    cfg = Config.fromfile(config(cfg_path))
    assert cfg.train_dataloader.dataset.pipeline[1]['clip_len'] == 16
    assert cfg.train_dataloader.dataset.pipeline[1]['frame_interval'] == 4
    assert cfg.model.cls_head.dropout_ratio == 0.5
    model = build_model(cfg).train()
    data = dict(inputs=[torch.randint(0, 256, (1, 3, 16, 32, 32), dtype=torch.uint8)
                        for _ in range(2)],
                data_samples=[ActionDataSample().set_gt_label(i) for i in (3, 399)])
    losses = model.train_step(data, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert torch.isfinite(losses['loss'])
