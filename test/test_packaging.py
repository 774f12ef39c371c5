"""The source distribution carries the license and what regenerates generated code."""
import os
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sdist_has_license_and_generators(tmp_path):
    env = dict(os.environ, TORCH_FP8GEMM_CPU_ONLY="1")
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=300)
    (archive,) = list(tmp_path.glob("*.tar.gz"))
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for wanted in ("LICENSE", "csrc/kernels/ptx/gen_wgmma.py", "csrc/kernels/ptx/wgmma_fp8_gen.cuh",
                   "csrc/kernels/sm90_fp8_gemm.cuh"):
        assert wanted in names, f"{wanted} missing from the sdist"
    with tarfile.open(archive) as tar:
        pkg_info = next(m for m in tar.getmembers() if m.name.endswith("/PKG-INFO"))
        text = tar.extractfile(pkg_info).read().decode()
    assert "Apache-2.0" in text, "the license is not in the package metadata"


def test_import_names_both_torch_versions_when_they_differ():
    # The extension is compiled against one torch; importing it under another major.minor must fail
    # with both versions named, not with a linker error.
    code = (
        "import sys, types\n"
        "info = types.ModuleType('torch_fp8gemm._build_info'); info.TORCH_VERSION = '1.99.0'\n"
        "sys.modules['torch_fp8gemm._build_info'] = info\n"
        "import torch\n"
        "try:\n"
        "    import torch_fp8gemm\n"
        "except ImportError as e:\n"
        "    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    import torch

    assert "ERR torch_fp8gemm was built against torch 1.99.0 but this is torch " + torch.__version__.split("+")[0] in out, out


def test_build_records_the_torch_it_was_built_with():
    import torch
    from torch_fp8gemm import _build_info

    assert _build_info.TORCH_VERSION.split(".")[:2] == torch.__version__.split("+")[0].split(".")[:2]
