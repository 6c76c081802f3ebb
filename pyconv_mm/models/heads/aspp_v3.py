"""ASPP as in the DeepLabv3 paper, for the Table 5 head-to-head.

mmseg's ``ASPPHead`` merges its five branches with a 3x3 convolution; DeepLabv3 (Chen et al.,
2017) projects them with a 1x1 convolution. With 256 channels the 1x1 projection gives the
41.48M parameters of the paper's Table 5 (ResNet-50, aux head included); mmseg's 3x3 gives
44.1M. This head is mmseg's ``ASPPHead`` with that one layer changed.
"""
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads import ASPPHead


class DeepLabV3ASPPHead(ASPPHead):
    """mmseg's ``ASPPHead`` with a ``bottleneck_kernel_size`` x k projection (1 by default).

    Args:
        bottleneck_kernel_size: kernel of the projection after concatenation (1 = DeepLabv3,
            3 = mmseg's ``ASPPHead``).
        **kwargs: :class:`mmseg.models.decode_heads.ASPPHead` arguments.
    """

    def __init__(self, bottleneck_kernel_size: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        if bottleneck_kernel_size not in (1, 3):
            raise ValueError(f'DeepLabV3ASPPHead: bottleneck_kernel_size='
                             f'{bottleneck_kernel_size}; valid: 1 or 3')
        self.bottleneck = ConvModule(
            self.bottleneck.conv.in_channels, self.channels, bottleneck_kernel_size,
            padding=bottleneck_kernel_size // 2, conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
