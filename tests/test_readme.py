"""The README's Python examples run as written."""

import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_examples_run(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import meanfield as mf

    monkeypatch.chdir(tmp_path)  # examples write files
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4
    namespace = {"np": np, "mf": mf, "rng": np.random.default_rng(0)}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "tanh.npz").exists()
    assert namespace["clf"].score(namespace["X2"], (namespace["X2"][:, 0] > 0).astype(int)) > 0.5
