"""Let mmengine 0.10.7 run distributed training on CPU-only machines (gloo).

mmengine 0.10.7's ``_init_dist_pytorch`` always calls ``torch.cuda.set_device`` and the Runner
always gives ``device_ids=[LOCAL_RANK]`` to ``MMDistributedDataParallel``. Without a GPU the
first raises and the second is refused by DDP for CPU modules, so
``tools/dist_train.sh CONFIG 2`` cannot run on a CPU machine (a laptop, CI).

Applied only when CUDA is not available and mmengine <= 0.10.7: the process group then uses
gloo (``nccl`` needs GPUs) and DDP gets ``device_ids=None`` for a module on the CPU, which is
what DDP asks for. With a GPU nothing is changed.
"""
import torch
from mmengine.utils import digit_version

LAST_AFFECTED_MMENGINE = '0.10.7'


def is_needed() -> bool:
    import mmengine
    return (not torch.cuda.is_available()
            and digit_version(mmengine.__version__) <= digit_version(LAST_AFFECTED_MMENGINE))


def _init_dist_pytorch_cpu(backend: str = 'gloo', init_backend: str = 'torch', **kwargs) -> None:
    """``mmengine.dist.utils._init_dist_pytorch`` without the CUDA device selection."""
    if init_backend != 'torch':
        raise ValueError(f'init_backend={init_backend!r} needs GPUs; on CPU only "torch" works')
    torch.distributed.init_process_group(backend='gloo' if backend == 'nccl' else backend,
                                         **kwargs)


def apply() -> bool:
    if not is_needed():
        return False
    import mmengine.dist.utils as dist_utils
    from mmengine.model.wrappers import distributed

    dist_utils._init_dist_pytorch = _init_dist_pytorch_cpu
    ddp_cls = distributed.MMDistributedDataParallel
    if getattr(ddp_cls.__init__, '_pyconv_cpu_fix', False):
        return True
    original_init = ddp_cls.__init__

    def __init__(self, module, detect_anomalous_params: bool = False, **kwargs):
        on_cpu = all(not p.is_cuda for p in module.parameters())
        if on_cpu:
            kwargs['device_ids'] = None
        original_init(self, module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    __init__._pyconv_cpu_fix = True
    ddp_cls.__init__ = __init__
    return True
