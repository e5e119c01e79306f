"""The README's Quick start, run as written on a fresh clone in a fresh virtual environment.

The test clones the repository's committed HEAD (uncommitted edits in the working tree are not
part of it) into a temporary folder, creates a new virtual environment, and runs each line of the
README's Quick-start code block with bash in the clone's folder, the new environment first on
PATH.  The lines are read from README.md when the test runs, so the test follows the README.

One substitution: the Quick start's second line ends in ``python -m pytest``, the whole test
suite, which includes this test and takes far too long to run inside a test.  That pytest
invocation (only it, in the README's own line text) is replaced by a quick run of
``tests/test_maps.py``; the ``pip install -e ".[test]"`` before it runs exactly as written.

Afterwards, from a folder that is not the clone, the installed console script and package must
work: ``meanfield point`` and ``meanfield --version`` print sensible output, and ``q_map`` agrees
with an independent quadrature.  No numba cache file (``.nbi``/``.nbc``) may be left in the
environment's site-packages: they once made ``pip install -e .`` leave a ``meanfield`` folder
there that Python imported as an empty namespace package.

The test needs the package index (or pip's cache) for the new environment's dependencies; it is
skipped only when pip reports that the index cannot be reached.
"""

import math
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT = 900  # seconds per command; a fresh environment downloads numpy, scipy, numba, sympy, ...
QUICK_PYTEST = 'python -m pytest -q -x -p no:cacheprovider -m "not slow" tests/test_maps.py'
# An invocation of pytest up to the end of its command (before &&, ||, ;, | or a comment).
PYTEST_CALL = re.compile(r"(?:\bpython3? -m )?\bpytest\b[^&|;#\n]*")
# What pip prints when it cannot reach the package index (urllib3 / requests / socket errors).
UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution"
    r"|Name or service not known|nodename nor servname|Network is unreachable|No route to host"
    r"|Connection refused|ProxyError|ConnectTimeoutError|Read timed out|Max retries exceeded"
)


def quick_start_lines(readme: str) -> list[str]:
    """The command lines of the first ```bash block under the README's "Quick start" heading."""
    section = re.search(r"^## Quick start\s*$(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert section, "README.md has no '## Quick start' section"
    block = re.search(r"```bash\n(.*?)```", section.group(1), re.S)
    assert block, "README.md's Quick start has no ```bash code block"
    lines = [line.strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def run(args, cwd, env, shell=False):
    """Run a command (a bash line if shell) with a timeout that also ends its child processes."""
    cmd = ["bash", "-c", args] if shell else [str(a) for a in args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{args!r} in {cwd} did not finish in {TIMEOUT} s\n{describe(out, err)}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def describe(out, err, limit=8000):
    def tail(text):
        return text if len(text) <= limit else "...\n" + text[-limit:]

    return f"--- stdout ---\n{tail(out)}\n--- stderr ---\n{tail(err)}"


def check(result, what):
    if result.returncode != 0:
        pytest.fail(f"{what} failed (exit {result.returncode})\n{describe(result.stdout, result.stderr)}")
    return result.stdout


def tanh_q_map(q, sigma_w2, sigma_b2):
    """sigma_w2 E[tanh(sqrt(q) z)^2] + sigma_b2, z ~ N(0, 1), by scipy's quad (independent of meanfield)."""
    from scipy.integrate import quad

    def integrand(z):
        return math.tanh(math.sqrt(q) * z) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    value, err = quad(integrand, -math.inf, math.inf, epsabs=1e-14, epsrel=1e-13, limit=200)
    assert err < 1e-12
    return sigma_w2 * value + sigma_b2


@pytest.mark.slow
def test_readme_quick_start_in_fresh_venv(tmp_path):
    clone, venv, cache, elsewhere = (tmp_path / name for name in ("meanfield", "venv", "cache", "elsewhere"))
    elsewhere.mkdir()
    check(run(["git", "clone", "--quiet", REPO, clone], tmp_path, None), "git clone of the repository")
    check(run([sys.executable, "-m", "venv", venv], tmp_path, None), "creating a virtual environment")
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")

    # A clean environment: the new venv first on PATH and no trace of the one running this test.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "NUMBA_CACHE_DIR")
           and not k.startswith("PYTEST_")}
    here = os.path.join(sys.prefix, "Scripts" if os.name == "nt" else "bin")
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and (sys.prefix == sys.base_prefix or
                                                                      os.path.abspath(p) != here)]
    env.update(PATH=os.pathsep.join([str(bindir), *path]), VIRTUAL_ENV=str(venv), MPLBACKEND="Agg",
               MEANFIELD_CACHE_DIR=str(cache))

    readme = (clone / "README.md").read_text()
    lines = quick_start_lines(readme)
    commands = [PYTEST_CALL.sub(QUICK_PYTEST + " ", line) for line in lines]
    changed = [line for line, cmd in zip(lines, commands) if cmd != line]
    assert len(changed) == 1, f"expected one pytest invocation in the README's Quick start, found {changed}"
    for line, cmd in zip(lines, commands):
        result = run(cmd, clone, env, shell=True)
        if result.returncode != 0 and UNREACHABLE.search(result.stdout + result.stderr):
            pytest.skip(f"the package index cannot be reached; {line!r} could not install its dependencies")
        check(result, f"README Quick-start line {line!r} (run as {cmd!r})")
    if "meanfield phase" in readme:
        for name in ("tanh_phase.png", "tanh_phase.npz"):
            assert (clone / name).stat().st_size > 0, f"meanfield phase did not write {name}"

    # From another folder, with the environment's own console script and interpreter.
    python, script = bindir / "python", bindir / "meanfield"
    out = check(run([script, "point", "tanh", "--sigma-w2", "1.5", "--sigma-b2", "0.05"], elsewhere, env),
                "meanfield point")
    assert out.startswith("tanh: sigma_w2 = 1.5, sigma_b2 = 0.05"), out
    q_star = float(re.search(r"^\s*q\*.*?(\S+)$", out, re.M).group(1))
    # q* is printed to 10 significant digits: a fixed point of the variance map to ~1e-10.
    assert abs(tanh_q_map(q_star, 1.5, 0.05) - q_star) < 1e-9, out
    assert re.search(r"^\s*phase\s+ordered$", out, re.M), out  # chi_1 < 1 below sigma_w2 ~ 1.76

    version = re.search(r'^version\s*=\s*"([^"]+)"', (clone / "pyproject.toml").read_text(), re.M).group(1)
    out = check(run([script, "--version"], elsewhere, env), "meanfield --version")
    assert out.strip() == f"meanfield {version}", out

    code = "import meanfield; print(meanfield.__file__); print(repr(float(meanfield.q_map(1.0, 'tanh', 1.5, 0.05))))"
    out = check(run([python, "-c", code], elsewhere, env), "import meanfield and q_map")
    file, value = out.strip().splitlines()[-2:]
    assert pathlib.Path(file).resolve() == (clone / "meanfield" / "__init__.py").resolve(), \
        f"meanfield imported from {file}, not from the editable install of the clone"
    assert abs(float(value) - tanh_q_map(1.0, 1.5, 0.05)) < 1e-10

    # No compiled-kernel cache inside the environment; the kernels went to MEANFIELD_CACHE_DIR.
    site = pathlib.Path(check(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  elsewhere, env), "locating site-packages").strip())
    stray = sorted(str(p) for pattern in ("*.nbi", "*.nbc") for p in site.rglob(pattern))
    assert not stray, "numba cache files inside site-packages:\n" + "\n".join(stray)
    assert not (site / "meanfield").exists(), \
        f"{site / 'meanfield'} is left after the editable install: {sorted(os.listdir(site / 'meanfield'))}"
    assert any(cache.rglob("*.nbi")), f"no compiled kernels were cached in MEANFIELD_CACHE_DIR={cache}"
