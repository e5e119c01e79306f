"""The trainability experiment (meanfield.trained_depth) and its command line, on tiny grids."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import meanfield as mf
from meanfield import runner
from meanfield.cli import main

pytest.importorskip("sklearn")

from meanfield.trained_depth import digits, plot_trainability, trainability  # noqa: E402

TINY = dict(width=12, steps=15, batch_size=32, lr=0.01)


@pytest.fixture(scope="module")
def tiny():
    return trainability("tanh", [1.0, 3.0], [1, 3], sigma_b2=0.05, rng=4, workers=1, **TINY)


@pytest.mark.slow
def test_runs_in_a_pool_as_in_series(tiny):
    pooled = trainability("tanh", [1.0, 3.0], [1, 3], sigma_b2=0.05, rng=4, workers=2, **TINY)
    np.testing.assert_array_equal(pooled.accuracy, tiny.accuracy)
    np.testing.assert_array_equal(pooled.loss, tiny.loss)
    assert tiny.accuracy.shape == (2, 2) and tiny.loss.shape == (2, 2, 15)
    assert np.all(np.isfinite(tiny.loss)) and not tiny.diverged.any()


def test_theory_and_scores(tiny):
    np.testing.assert_allclose(tiny.xi_c, mf.xi_c("tanh", [1.0, 3.0], 0.05), rtol=1e-9)
    assert tiny.critical_sigma_w2 == pytest.approx(float(mf.critical_sigma_w2("tanh", 0.05)), rel=1e-12)
    assert np.all(np.diff(tiny.theory_sigma_w2) > 0)
    i = np.searchsorted(tiny.theory_sigma_w2, tiny.critical_sigma_w2)
    assert tiny.theory_sigma_w2[i] == tiny.critical_sigma_w2 and tiny.theory_xi_c[i] > 1e3  # xi_c diverges there
    # chance: the digits' test split is stratified, the largest class about a tenth
    assert 0.09 < tiny.chance < 0.12 and tiny.threshold == pytest.approx(2 * tiny.chance)
    trained = tiny.accuracy > tiny.threshold
    np.testing.assert_array_equal(tiny.trained, trained)
    expect = np.mean(trained == (tiny.depths[:, None] < 6 * tiny.xi_c[None, :]))
    assert tiny.agreement == pytest.approx(expect)
    assert "6 xi_c" in tiny.summary()


@pytest.mark.slow
def test_fitted_constant_recovers_a_known_boundary(monkeypatch):
    """With outcomes made to follow 'trained iff L < 5 xi_c', the fit must find k = 5."""
    xi = {}

    def fake_run(fn, tasks, **kwargs):
        out = []
        for t in tasks:
            s = t["sigma_w2"]
            xi.setdefault(s, float(mf.xi_c("tanh", s, t["sigma_b2"])))
            acc = 0.9 if t["depth"] < 5 * xi[s] else 0.1
            out.append((acc, acc, np.zeros(t["steps"]), False))
        return out

    monkeypatch.setattr(runner, "run", fake_run)
    depths = np.unique(np.geomspace(2, 200, 25).round())
    r = trainability("tanh", [1.0, 1.3, 3.0], depths, **TINY)
    assert np.all(np.isfinite(r.boundary))
    assert r.k == pytest.approx(5.0, rel=0.1)
    ratio = r.boundary / r.xi_c
    assert np.all((ratio > 5 / 1.25) & (ratio < 5 * 1.25))
    assert r.agreement_fitted > 0.97
    expect = np.mean(r.trained == (depths[:, None] < 6 * r.xi_c[None, :]))
    assert r.agreement == pytest.approx(expect) and r.agreement < 1
    ax = plot_trainability(r)
    assert ax.get_ylabel() == "depth $L$" and len(ax.get_lines()) >= 3


def test_digits_split_is_standardised_and_reproducible():
    X, y, Xt, yt = digits(0, test_fraction=0.25)
    assert X.shape[1] == Xt.shape[1] == 64 and len(X) + len(Xt) == 1797
    assert len(Xt) == pytest.approx(0.25 * 1797, abs=1)
    varying = X.std(axis=0) > 0
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(X.std(axis=0)[varying], 1, rtol=1e-12)
    assert set(np.unique(y)) == set(range(10)) == set(np.unique(yt))
    again = digits(0, test_fraction=0.25)
    np.testing.assert_array_equal(again[1], y)
    assert not np.array_equal(digits(1, test_fraction=0.25)[1], y)


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'meanfield\[train\]'"):
        digits(0)


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(runner, "run", refuse)


@pytest.mark.parametrize("kwargs, match", [
    ({"sigma_w2": [2.0, 1.0]}, "increasing"),
    ({"sigma_w2": [-1.0, 1.0]}, "positive"),
    ({"depths": [2, 3.5]}, "whole numbers"),
    ({"depths": [0, 3]}, "positive"),
    ({"lr": 0.0}, "lr"),
    ({"momentum": 1.5}, "momentum"),
    ({"width": 0}, "width"),
    ({"sigma_b2": -0.1}, "sigma_b2"),
    ({"batch_size": 5000}, "batch_size"),
    ({"dtype": "float16"}, "dtype"),
])
def test_bad_settings_are_refused_before_training(no_training, kwargs, match):
    args = dict(sigma_w2=[1.0, 2.0], depths=[2, 4], **TINY)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        trainability("tanh", args.pop("sigma_w2"), args.pop("depths"), **args)


def test_save_is_complete_or_absent(tiny, tmp_path):
    path = tmp_path / "t.npz"
    tiny.save(path)
    with np.load(path) as f:
        np.testing.assert_array_equal(f["accuracy"], tiny.accuracy)
        assert float(f["k"]) == tiny.k or (np.isnan(float(f["k"])) and np.isnan(tiny.k))
        assert str(f["activation"]) == "tanh" and int(f["settings_width"]) == 12
    with pytest.raises(OSError):
        tiny.save(tmp_path / "missing" / "t.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]


def test_command_line_writes_data_and_figure(tmp_path, capsys):
    out = tmp_path / "run.png"
    code = main(["trainability", "tanh", "--sigma-b2", "0.05", "--sigma-w2", "1,3", "--depths", "1,3",
                 "--width", "12", "--steps", "15", "--batch-size", "32", "--lr", "0.01", "--workers", "1",
                 "--seed", "4", "--output", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert (tmp_path / "run.npz").exists() and out.stat().st_size > 1000
    assert report["figure"] == str(out) and len(report["accuracy"]) == 2
    ref = trainability("tanh", [1.0, 3.0], [1, 3], sigma_b2=0.05, rng=4, workers=1, **TINY)
    np.testing.assert_array_equal(np.array(report["accuracy"], dtype=float), ref.accuracy)


def test_command_line_refuses_bad_input(tmp_path, capsys):
    code = main(["trainability", "--depths", "2,3.5", "--output", str(tmp_path / "x")])
    assert code == 2 and "--depths" in capsys.readouterr().err
    code = main(["trainability", "--lr", "-1", "--sigma-w2", "1", "--depths", "2", "--output", str(tmp_path / "x")])
    assert code == 2 and "lr" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
