"""The task runner: same results serially, in a local process pool and on a Dask cluster."""

import numpy as np
import pytest

from meanfield import runner


def _draw(task):
    """A task that draws from its own generator: the result depends only on the task."""
    i, seed = task
    return i, float(np.random.default_rng(seed).standard_normal(3) @ np.arange(3.0))


def _fail(task):
    if task == 2:
        raise ValueError("task 2 is bad")
    return task


def test_task_seeds_are_reproducible_and_independent():
    a = [np.random.default_rng(s).standard_normal() for s in runner.task_seeds(7, 5)]
    b = [np.random.default_rng(s).standard_normal() for s in runner.task_seeds(np.random.default_rng(7), 5)]
    assert a == b
    assert len(set(a)) == 5
    with pytest.raises(TypeError, match="rng"):
        runner.task_seeds(1.5, 3)
    with pytest.raises(ValueError, match="n must"):
        runner.task_seeds(1, -1)


def test_serial_and_pool_agree_and_report_progress():
    tasks = list(zip(range(6), runner.task_seeds(3, 6)))
    seen = []
    serial = runner.run(_draw, tasks, workers=1, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(k, 6) for k in range(1, 7)]
    pooled = runner.run(_draw, tasks, workers=2)
    assert pooled == serial
    assert [r[0] for r in pooled] == list(range(6))


def test_errors_are_clear():
    with pytest.raises(ValueError, match="task 2 is bad"):
        runner.run(_fail, range(4), workers=2)
    with pytest.raises(TypeError, match="module-level"):
        runner.run(lambda t: t, range(4), workers=2)
    with pytest.raises(ValueError, match="workers"):
        runner.run(_draw, [], workers=0)
    with pytest.raises(TypeError, match="client"):
        runner.run(_draw, [1], client=object())


def test_unreachable_scheduler_fails_fast(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT", 2.0)
    with pytest.raises(ValueError, match="could not reach the Dask scheduler"):
        runner.run(_draw, [1], client="tcp://127.0.0.1:9")


@pytest.mark.slow
def test_dask_cluster_gives_the_local_results():
    distributed = pytest.importorskip("distributed")
    tasks = list(zip(range(5), runner.task_seeds(11, 5)))
    local = runner.run(_draw, tasks, workers=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        assert runner.run(_draw, tasks, client=client) == local
        assert runner.run(_draw, tasks, client=cluster.scheduler_address) == local
