"""Every Python snippet of the README runs as shown (tiny shapes; CPU reference kernels here)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_the_readme_has_snippets():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a snippet that saves a file writes it here
    from torch._inductor import config as inductor_config

    # the torch.compile snippet installs a global Inductor pass: restored for the tests after this one
    monkeypatch.setattr(inductor_config, "post_grad_custom_post_pass", inductor_config.post_grad_custom_post_pass)
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), {"__name__": "readme_snippet"})
