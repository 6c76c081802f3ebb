"""Independent reference networks in the authors' checkpoint layout, written from SPEC.md with
plain torch layers only (no pyconv_mm code), to check converters and our models against."""
import torch
from torch import nn

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
KERNELS = ([3, 5, 7, 9], [3, 5, 7], [3, 5], [3])
GROUPS = {False: ([1, 4, 8, 16], [1, 4, 8], [1, 4], [1]),
          True: ([32, 32, 32, 32], [32, 64, 64], [32, 64], [32])}
SHARES = ([4, 4, 4, 4], [4, 4, 2], [2, 2], [1])  # each level gets width // share


class Levels(nn.Module):
    """``conv2`` with ``conv2_1`` .. ``conv2_n``, outputs concatenated."""

    def __init__(self, width, kernels, groups, shares, stride, dilation):
        super().__init__()
        self.n = len(kernels)
        for i, (k, g, s) in enumerate(zip(kernels, groups, shares), start=1):
            self.add_module(f'conv2_{i}', nn.Conv2d(width, width // s, k, stride, k // 2 * dilation,
                                                    dilation, g, bias=False))

    def forward(self, x):
        return torch.cat([getattr(self, f'conv2_{i}')(x) for i in range(1, self.n + 1)], 1)


class Block(nn.Module):

    def __init__(self, inplanes, width, out, stage, hg, stride, dilation, first):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if len(KERNELS[stage]) == 1:
            self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation,
                                   GROUPS[hg][stage][0], bias=False)
        else:
            self.conv2 = Levels(width, KERNELS[stage], GROUPS[hg][stage], SHARES[stage], stride,
                                dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample = nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.Conv2d(inplanes, out, 1, bias=False),
                                        nn.BatchNorm2d(out)) if first else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class AuthorsPyConvResNet(nn.Module):
    """PyConvResNet / PyConvHGResNet (Table 1); ``dilated=True`` gives the OS8 segmentation
    backbone (stages 3-4 stride 1, dilation 2 and 4, shortcut max pools kept with stride 1)."""

    def __init__(self, depth=50, hg=False, num_classes=1000, dilated=False, with_fc=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        inplanes = 64
        for stage, blocks in enumerate(DEPTHS[depth]):
            width = (128 if hg else 64) * 2**stage
            out = 256 * 2**stage
            stride = 1 if dilated and stage >= 2 else 2
            dilation = (1, 1, 2, 4)[stage] if dilated else 1
            layers = []
            for j in range(blocks):
                layers.append(Block(inplanes, width, out, stage, hg, stride if j == 0 else 1,
                                    dilation, j == 0))
                inplanes = out
            self.add_module(f'layer{stage + 1}', nn.Sequential(*layers))
        self.fc = nn.Linear(2048, num_classes) if with_fc else None

    def features(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        c3 = self.layer3(x)
        return c3, self.layer4(c3)

    def forward(self, x):
        return self.fc(self.features(x)[1].mean((2, 3)))


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics, so that a wrong mapping cannot hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.dtype.is_floating_point:
                values = torch.rand(tensor.shape, generator=gen) + 0.5 if name.endswith(
                    'running_var') else torch.randn(tensor.shape, generator=gen) * 0.1
                tensor.copy_(values)
    return module.eval()


def pyconv4(width):
    """The authors' PyConv4 (3, 5, 7, 9 / G 1, 4, 8, 16), as ``conv2_1`` .. ``conv2_4``."""
    return Levels(width, [3, 5, 7, 9], [1, 4, 8, 16], [4, 4, 4, 4], 1, 1)


def conv_bn_relu(cin, cout, k=1):
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class AuthorsPyConvHead(nn.Module):
    """``pyconvhead``: local_context.layers, global_context.features, merge_context.features."""

    def __init__(self):
        super().__init__()
        self.local_context = nn.Module()
        self.local_context.layers = nn.Sequential(*conv_bn_relu(2048, 512), pyconv4(512),
                                                  nn.BatchNorm2d(512), nn.ReLU(),
                                                  *conv_bn_relu(512, 512))
        self.global_context = nn.Module()
        self.global_context.features = nn.Sequential(nn.AdaptiveAvgPool2d(9),
                                                     *conv_bn_relu(2048, 512), pyconv4(512),
                                                     nn.BatchNorm2d(512), nn.ReLU(),
                                                     *conv_bn_relu(512, 512))
        self.merge_context = nn.Module()
        self.merge_context.features = nn.Sequential(*conv_bn_relu(1024, 256, 3))

    def forward(self, x):
        local = self.local_context.layers(x)
        glob = torch.nn.functional.interpolate(self.global_context.features(x), x.shape[2:],
                                               mode='bilinear', align_corners=True)
        return self.merge_context.features(torch.cat([local, glob], 1))


class AuthorsPyConvSegNet(nn.Module):
    """PyConvSegNet in the authors' layout (layer0..layer4, pyconvhead, aux, cls), output
    stride 8; ``backbone='resnet'`` uses torchvision's ResNet dilated as the authors do."""

    def __init__(self, depth=50, num_classes=150, backbone='pyconvresnet'):
        super().__init__()
        if backbone == 'pyconvresnet':
            net = AuthorsPyConvResNet(depth, dilated=True, with_fc=False)
            self.layer0 = nn.Sequential(net.conv1, net.bn1, nn.ReLU())
        else:
            import torchvision
            net = getattr(torchvision.models, f'resnet{depth}')()
            for layer, d in ((net.layer3, 2), (net.layer4, 4)):
                for name, m in layer.named_modules():
                    if name.endswith('conv2'):
                        m.dilation, m.padding, m.stride = (d, d), (d, d), (1, 1)
                    elif name.endswith('downsample.0'):
                        m.stride = (1, 1)
            self.layer0 = nn.Sequential(net.conv1, net.bn1, nn.ReLU(), net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (net.layer1, net.layer2, net.layer3,
                                                              net.layer4)
        self.pyconvhead = AuthorsPyConvHead()
        self.aux = nn.Sequential(*conv_bn_relu(1024, 256, 3), nn.Dropout2d(0.1),
                                 nn.Conv2d(256, num_classes, 1))
        self.cls = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(256, num_classes, 1))

    def forward(self, x):
        """Logits of the main and auxiliary classifiers at 1/8 resolution."""
        c3 = self.layer3(self.layer2(self.layer1(self.layer0(x))))
        return self.cls(self.pyconvhead(self.layer4(c3))), self.aux(c3)
