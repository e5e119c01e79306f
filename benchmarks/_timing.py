"""The one timer of the benchmarks: best wall-clock time of several calls."""

import time


def best(fn, repeat=3, warm=False):
    """``(seconds, result)``: the fastest of ``repeat`` calls of ``fn`` (after one untimed call if ``warm``)."""
    if warm:
        fn()
    seconds, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        seconds = min(seconds, time.perf_counter() - start)
    return seconds, out
