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
