import pytest
import torch

import torch_fp8gemm  # noqa: F401  (registers the ops)

HAS_CUDA = torch.cuda.is_available()
HAS_SM90 = HAS_CUDA and torch.cuda.get_device_capability() >= (9, 0)

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
requires_sm90 = pytest.mark.skipif(not HAS_SM90, reason="needs an sm_90 (Hopper) GPU for the FP8 kernels")

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
