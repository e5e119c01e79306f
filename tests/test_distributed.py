"""Kernels by blocks (meanfield.blocked) on a Dask cluster of two worker processes, against the in-memory kernels."""

import os
import signal
import threading

import numpy as np
import pytest

import meanfield as mf
from meanfield import runner
from meanfield.blocked import nngp_blocks, ntk_blocks

distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

SW, SB = 1.6, 0.1


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                       memory_limit="600MB")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _inputs(n, d=6, seed=0, norms=(0.5, 1.0, 2.0)):
    """Inputs with a few distinct norms (tables at each norm, no interpolation over variances)."""
    X = np.random.default_rng(seed).standard_normal((n, d))
    X *= np.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)
    return X * np.resize(np.asarray(norms), n)[:, None]


def _close(A, B, tol=1e-14):
    """Largest difference relative to the largest entry: fails if any entry is off by more than tol."""
    A, B = np.asarray(A), np.asarray(B)
    assert A.shape == B.shape
    err = np.max(np.abs(A - B)) / np.max(np.abs(A))
    assert err <= tol, err


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_blocks_on_cluster_equal_the_in_memory_kernel_closed_form(client, kernel):
    X, Y = _inputs(37), _inputs(23, seed=1)
    local, blocked = (mf.nngp, nngp_blocks) if kernel == "nngp" else (mf.ntk, ntk_blocks)
    for X2 in (None, Y):
        expect = local(X, X2, "relu", 6, SW, SB)
        got = blocked(X, X2, "relu", 6, SW, SB, block=10, client=client).compute(scheduler=client)
        assert np.array_equal(expect, got)  # closed form: the same operations on every entry
        if X2 is None:
            assert np.array_equal(got, got.T)


@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_blocks_on_cluster_equal_the_in_memory_kernel_tables(client, kernel):
    """tanh (no closed form): the tables, built once on all angles, shipped to the workers."""
    X = _inputs(37, norms=(1.0,))
    local, blocked = (mf.nngp, nngp_blocks) if kernel == "nngp" else (mf.ntk, ntk_blocks)
    X2 = None if kernel == "nngp" else _inputs(23, seed=1, norms=(1.0,))
    expect = local(X, X2, "tanh", 2, SW, SB)
    got = blocked(X, X2, "tanh", 2, SW, SB, block=10, client=client).compute(scheduler=client)
    _close(expect, got)
    if X2 is None:  # the mirrored lower blocks make it exactly symmetric
        assert np.array_equal(got, got.T)


@pytest.mark.slow
def test_many_norms_threaded_scheduler_and_one_block():
    """Six distinct norms: the tables interpolated over the variances; on the local threads."""
    X = _inputs(19, d=4, seed=3, norms=np.linspace(0.9, 1.1, 6))
    expect = mf.nngp(X, None, "tanh", 1, SW, SB)
    _close(expect, nngp_blocks(X, None, "tanh", 1, SW, SB, block=7).compute())
    _close(expect, nngp_blocks(X, None, "tanh", 1, SW, SB, block=100).compute())  # one ragged block


def test_zarr_store_is_complete_and_refuses_to_overwrite(tmp_path):
    X = _inputs(25)
    path = tmp_path / "K.zarr"
    seen = []
    z = ntk_blocks(X, None, "relu", 4, SW, SB, block=10, out=path, progress=lambda d, t: seen.append((d, t)))
    assert np.array_equal(z[:], mf.ntk(X, None, "relu", 4, SW, SB))
    assert seen[-1] == (6, 6) and len(seen) == 6  # 3 x 3 blocks, the 6 on and above the diagonal
    assert dict(z.attrs)["kernel"] == "ntk" and dict(z.attrs)["depth"] == 4
    with pytest.raises(FileExistsError, match="overwrite"):
        nngp_blocks(X, None, "relu", 2, out=path, block=10)
    z = nngp_blocks(X, None, "relu", 2, SW, SB, out=path, block=10, overwrite=True)
    assert np.array_equal(z[:], mf.nngp(X, None, "relu", 2, SW, SB))
    assert sorted(os.listdir(tmp_path)) == ["K.zarr"]  # no temporary store left behind


def test_bad_arguments_refused_before_any_work(tmp_path):
    X = _inputs(10)
    for block in (0, -3, 2.5, "10", True):
        with pytest.raises(ValueError, match="block"):
            nngp_blocks(X, block=block, out=tmp_path / "K.zarr")
    with pytest.raises(ValueError, match="memory_limit"):
        nngp_blocks(X, block=10_000, memory_limit=1e6)
    with pytest.raises(ValueError, match="depth"):
        nngp_blocks(X, depth=-1)
    with pytest.raises(TypeError, match="client"):
        nngp_blocks(X, client=3)
    with pytest.raises(ValueError, match="give out="):  # an address would be connected to and dropped
        nngp_blocks(X, client="tcp://127.0.0.1:9")
    with pytest.raises(ValueError, match="directory"):
        nngp_blocks(X, out=tmp_path / "missing" / "K.zarr")
    with pytest.raises(ValueError, match="float64's range"):  # every layer's variances checked first
        nngp_blocks(X, None, "relu", 2000, 4.0, 0.0, out=tmp_path / "K.zarr")
    assert os.listdir(tmp_path) == []


def test_unreachable_scheduler_clear_error_nothing_written(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT", 2.0)
    with pytest.raises(ValueError, match="could not reach the Dask scheduler"):
        nngp_blocks(_inputs(10), client="tcp://127.0.0.1:9", out=tmp_path / "K.zarr", block=5)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_kernel_larger_than_a_workers_memory_completes_by_blocks(client, tmp_path):
    limit = min(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
    n = 9000  # 9000^2 float64 = 648 MB, more than either worker's limit
    assert 8 * n * n > limit
    X = np.random.default_rng(5).standard_normal((n, 3))
    z = nngp_blocks(X, None, "relu", 1, SW, SB, block=1500, client=client, out=tmp_path / "K.zarr")
    rows = np.array([0, 1499, 1500, 4000, 8999])
    _close(mf.nngp(X[rows], X, "relu", 1, SW, SB), z.get_orthogonal_selection((rows, slice(None))))
    assert np.isfinite(z[-1500:, :]).all()


@pytest.mark.slow
def test_killed_worker_tasks_are_recomputed_and_the_store_is_complete(client, tmp_path):
    X = _inputs(200, seed=7, norms=(1.0,))
    started = threading.Event()

    def progress(done, total):
        if done >= 3:
            started.set()

    result = {}

    def work():
        try:
            result["z"] = nngp_blocks(X, None, "tanh", 10, SW, SB, block=20, client=client,
                                      out=tmp_path / "K.zarr", progress=progress)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            result["error"] = err

    thread = threading.Thread(target=work)
    thread.start()
    assert started.wait(120)
    pid = next(iter(client.run(os.getpid).values()))
    os.kill(pid, signal.SIGKILL)
    assert thread.is_alive()  # the worker died mid-run
    thread.join(300)
    assert "error" not in result, result.get("error")
    _close(mf.nngp(X, None, "tanh", 10, SW, SB), result["z"][:])


def test_command_line_writes_the_kernel(tmp_path, capsys):
    from meanfield.cli import main

    X = _inputs(23)
    np.save(tmp_path / "x.npy", X)
    out = str(tmp_path / "K.zarr")
    argv = ["kernel", str(tmp_path / "x.npy"), "relu", "--depth", "3", "--out", out, "--block", "10", "--ntk"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "9/9 blocks" not in captured.err and "6/6 blocks" in captured.err  # the progress bar
    assert "23 x 23 NTK" in captured.out
    assert np.array_equal(zarr.open_array(out)[:], mf.ntk(X, None, "relu", 3, 1.76, 0.05))
    assert main(argv) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--sigma-w2", "2"]) == 0
    assert np.array_equal(zarr.open_array(out)[:], mf.ntk(X, None, "relu", 3, 2.0, 0.05))
    assert main(["kernel", str(tmp_path / "none.npy"), "--out", str(tmp_path / "L.zarr")]) == 2
