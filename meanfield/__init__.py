"""meanfield: the mean-field theory of deep random networks, for any nonlinearity.

Variance and correlation maps, their fixed points, depth scales, the order-to-chaos critical
line and trainable depth (Poole et al. 2016; Schoenholz et al. 2017), exact where closed forms
exist and by accurate adaptive quadrature otherwise.  Variances everywhere (sigma_w2, sigma_b2).
"""

from importlib.metadata import PackageNotFoundError, version

from .activations import Activation, DerivativeWarning, activation, activation_names
from .architecture import Layer, network
from .expectations import expectation
from .finite_width import FiniteWidth, JacobianNorm, finite_width, jacobian_norm  # function, not the module
from .finite_width_pair import FiniteWidthPair, finite_width_pair  # function, not the module
from .fixed_points import ConvergenceWarning, FixedPointInfo, c_star, q_star
from .layers import Dense
from .maps import c_map, chi_1, chi_c, cov_map, q_map, q_map_slope
from .phase import (
    PHASES,
    CriticalPoint,
    MeanFieldPoint,
    analyze,
    critical_line,
    critical_points,
    critical_sigma_w2,
    trainable_depth,
    xi_c,
    xi_q,
)
from .quadrature import QuadratureWarning
from .symbolic import closed_form

try:
    __version__ = version("meanfield")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "Activation",
    "activation",
    "activation_names",
    "expectation",
    "closed_form",
    "q_map",
    "q_map_slope",
    "cov_map",
    "c_map",
    "chi_1",
    "chi_c",
    "q_star",
    "c_star",
    "FixedPointInfo",
    "xi_q",
    "xi_c",
    "trainable_depth",
    "critical_sigma_w2",
    "critical_line",
    "critical_points",
    "CriticalPoint",
    "PHASES",
    "Dense",
    "layers",
    "Layer",
    "network",
    "architecture",
    "gradient_scales",
    "GradientScales",
    "lambda_G",
    "batchnorm",
    "finite_width",
    "FiniteWidth",
    "jacobian_norm",
    "JacobianNorm",
    "finite_width_pair",
    "FiniteWidthPair",
    "jacobian_spectrum",
    "JacobianSpectrum",
    "jacobian_moments",
    "JacobianMoments",
    "SpectrumWarning",
    "spectrum",
    "runner",
    "blocked",
    "analyze",
    "MeanFieldPoint",
    "ConvergenceWarning",
    "QuadratureWarning",
    "DerivativeWarning",
    "phase_diagram",
    "phase_diagrams",
    "PhaseDiagram",
    "load_phase_diagram",
    "GridTooLargeError",
    "propagate",
    "Propagation",
    "gradient_growth",
    "GradientGrowth",
    "nngp",
    "ntk",
    "NNGPRegressor",
    "NNGPClassifier",
    "KernelWarning",
    "gp",
    "empirical",
    "NetworkSpec",
    "empirical_nngp",
    "empirical_ntk",
    "plotting",
    "training",
    "trainability",
    "Trainability",
    "trained_depth",
    "__version__",
]


# Heavier parts (numba kernels, scipy.stats, matplotlib) load on first use, so that a new
# process that only needs the maps answers quickly.
_LAZY = {
    "phase_diagram": "diagram",
    "phase_diagrams": "diagram",
    "PhaseDiagram": "diagram",
    "load_phase_diagram": "diagram",
    "GridTooLargeError": "diagram",
    "propagate": "dynamics",
    "Propagation": "dynamics",
    "gradient_growth": "dynamics",
    "GradientGrowth": "dynamics",
    "NetworkSpec": "empirical",
    "empirical_nngp": "empirical",
    "empirical_ntk": "empirical",
    "nngp": "kernels",
    "ntk": "kernels",
    "NNGPRegressor": "gp",
    "NNGPClassifier": "gp",
    "KernelWarning": "kernels",
    "gradient_scales": "gradients",
    "GradientScales": "gradients",
    "lambda_G": "batchnorm",
    "jacobian_spectrum": "spectrum",
    "JacobianSpectrum": "spectrum",
    "SpectrumWarning": "spectrum",
    "jacobian_moments": "spectrum",
    "JacobianMoments": "spectrum",
    "trainability": "trained_depth",
    "Trainability": "trained_depth",
}
_SUBMODULES = ("empirical", "plotting", "diagram", "dynamics", "kernels", "gp", "layers", "architecture",
               "gradients", "batchnorm", "spectrum", "runner", "training", "trained_depth", "blocked")


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'meanfield' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
