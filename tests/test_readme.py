"""The README's Python examples run as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.slow
def test_readme_examples_run(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # examples write files
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4
    namespace = {}  # as a user pasting the blocks in order into a new session
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert (tmp_path / "tanh.npz").exists()
    assert namespace["clf"].score(namespace["X2"], (namespace["X2"][:, 0] > 0).astype(int)) > 0.5
    # the numbers the README quotes in its comments (tests/test_layers.py derives them independently)
    pair = namespace["pair"]  # tests/test_finite_width_pair.py checks the pair theory against sampled networks
    assert abs(pair.K[-1, 1] - 0.3747) < 1e-4 and abs(pair.mean_kernel[-1, 1] - 0.3475) < 1e-4
    p = namespace["p"]
    assert abs(p.c_star - 0.47280) < 1e-5 and abs(p.c_star_small_bias - 0.78109) < 1e-5
