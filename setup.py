"""Builds torch_fp8gemm._C.

With a CUDA build of torch and a CUDA toolkit, the sm_90a kernels (csrc/kernels, csrc/ops/*.cu)
are compiled ahead of time; otherwise a CPU-only extension is built (reference kernels only).

Environment:
  TORCH_FP8GEMM_CPU_ONLY=1   build without CUDA even when a toolkit is present
  CUDA_HOME                  toolkit folder (default: the folder of the real nvcc)
  DEBUG=1                    -O0 -g host and device code
  TORCH_FP8GEMM_PTXAS_VERBOSE=1   print ptxas register/spill reports
  MAX_JOBS                   parallel compile jobs (ninja)
"""
import glob
import os
import shutil

from setuptools import find_packages, setup


def _real_cuda_home():
    # torch guesses CUDA_HOME from `which nvcc`; a wrapper script on PATH (/usr/local/bin/nvcc)
    # fools it, so resolve the toolkit from the nvcc the wrapper runs or from the usual folder.
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    for candidate in ("/usr/local/cuda",):
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return os.path.realpath(candidate)
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None


_cuda_home = _real_cuda_home()
if _cuda_home:
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
DEBUG = os.environ.get("DEBUG", "0") == "1"
WITH_CUDA = (
    torch.version.cuda is not None
    and _cuda_home is not None
    and os.environ.get("TORCH_FP8GEMM_CPU_ONLY", "0") != "1"
)


# Device code compiled into the extension (csrc/kernels holds headers and these translation units).
KERNEL_SOURCES = sorted(glob.glob("csrc/kernels/*.cu"))


def _nvidia_wheel_includes():
    # CUDA builds of torch ship cuBLAS/cuSPARSE headers in the `nvidia` wheels; a bare toolkit may
    # lack them, and ATen's CUDA headers include them.
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for base in nvidia.__path__:
        found += [d for d in glob.glob(os.path.join(base, "*", "include")) if os.path.isdir(d)]
    return found


def _extension():
    cpp_sources = sorted(glob.glob("csrc/ops/*.cpp"))
    cxx_flags = ["-O0", "-g"] if DEBUG else ["-O3"]
    if not WITH_CUDA:
        return CppExtension("torch_fp8gemm._C", cpp_sources, extra_compile_args={"cxx": cxx_flags})
    cuda_sources = sorted(glob.glob("csrc/ops/*.cu")) + KERNEL_SOURCES
    nvcc_flags = ["-O0", "-g", "-G"] if DEBUG else ["-O3", "-lineinfo"]
    nvcc_flags += [
        "-gencode=arch=compute_90a,code=sm_90a",
        "--expt-relaxed-constexpr",
        "-Xptxas=--warn-on-spills",
    ]
    if os.environ.get("TORCH_FP8GEMM_PTXAS_VERBOSE") == "1":
        nvcc_flags.append("-Xptxas=-v")
    return CUDAExtension(
        "torch_fp8gemm._C",
        cpp_sources + cuda_sources,
        include_dirs=[os.path.join(ROOT, "csrc")] + _nvidia_wheel_includes(),
        define_macros=[("TORCH_FP8GEMM_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
    )


def _write_build_info():
    # The extension links against this torch's C++ ABI: the package checks at import that the torch
    # it runs with has the same major.minor (torch_fp8gemm/__init__.py).
    with open(os.path.join(ROOT, "torch_fp8gemm", "_build_info.py"), "w") as f:
        f.write('"""Written by setup.py when the extension is built."""\n')
        f.write(f"TORCH_VERSION = {torch.__version__.split('+')[0]!r}\n")


_write_build_info()

setup(
    name="torch_fp8gemm",
    version="0.1.0",
    description="FP8 GEMMs with DeepSeek-V3 fine-grained scaling for Hopper, as PyTorch custom ops",
    license="Apache-2.0",
    license_files=["LICENSE"],
    packages=find_packages(include=["torch_fp8gemm", "torch_fp8gemm.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    install_requires=["torch>=2.11"],
    extras_require={"test": ["pytest", "expecttest"]},
)
