"""FP8 (e4m3) GEMMs with DeepSeek-V3 fine-grained scaling for NVIDIA Hopper, as PyTorch custom ops.

    import torch_fp8gemm
    out = torch_fp8gemm.dense(x, w)                  # bf16 x, w: quantized by the op
    out = torch_fp8gemm.dense(x_fp8, w_fp8, x_scale, w_scale)

The ops live in torch.ops.fp8gemm.* and work on CPU (reference) and CUDA.
"""
import torch  # noqa: F401  (loads libtorch, which _C links against)


def _check_built_torch():
    try:
        from ._build_info import TORCH_VERSION as built
    except ImportError:  # a source tree that was never built: the _C import below says so
        return
    running = torch.__version__.split("+")[0]
    if built.split(".")[:2] != running.split(".")[:2]:
        raise ImportError(
            f"torch_fp8gemm was built against torch {built} but this is torch {running}: the extension "
            "only loads with the torch (major.minor) it was compiled for. Rebuild it from the repo root "
            "with `pip install --no-build-isolation -e .`, or install torch " + ".".join(built.split(".")[:2]) + "."
        )


_check_built_torch()

try:
    from . import _C  # noqa: F401  (loading the library registers torch.ops.fp8gemm)
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "torch_fp8gemm._C is not built or does not match this torch. Build it from the repo root with "
        "`pip install --no-build-isolation -e .` (see README.md)."
    ) from exc

from . import ops  # noqa: E402
from .ops import *  # noqa: E402,F401,F403  (the op wrappers, as ops.__all__ lists them)
from . import moe, nn  # noqa: E402
from .checkpoint import load_fp8_checkpoint  # noqa: E402
from .moe import FP8MoEExperts  # noqa: E402
from .nn import FP8Linear, convert  # noqa: E402

__all__ = ["FP8Linear", "FP8MoEExperts", "convert", "load_fp8_checkpoint", *ops.__all__]
__version__ = "0.1.0"


def __getattr__(name):
    # torch_fp8gemm.compile (the Inductor rewrite pass) imports torch._inductor: load it on first use.
    if name == "compile":
        import importlib

        return importlib.import_module(".compile", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
