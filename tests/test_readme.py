"""The README's Python example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert (tmp_path / "fashion_1x16.tflite").stat().st_size > 0
    final = namespace["final"]
    zeros = (final.get_layer("conv3").kernel.numpy() == 0).mean()
    assert zeros == pytest.approx(0.75, abs=0.01)
