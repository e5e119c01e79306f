"""meanfield: the mean-field theory of deep random networks, for any nonlinearity.

Variance and correlation maps, their fixed points, depth scales, the order-to-chaos critical
line and trainable depth (Poole et al. 2016; Schoenholz et al. 2017), exact where closed forms
exist and by accurate adaptive quadrature otherwise.  Variances everywhere (sigma_w2, sigma_b2).
"""

from importlib.metadata import PackageNotFoundError, version

from . import empirical
from .activations import Activation, activation, activation_names
from .empirical import NetworkSpec, empirical_nngp, empirical_ntk
from .expectations import expectation
from .fixed_points import ConvergenceWarning, FixedPointInfo, c_star, q_star
from .maps import c_map, chi_1, chi_c, cov_map, q_map, q_map_slope
from .phase import MeanFieldPoint, analyze, critical_line, critical_sigma_w2, trainable_depth, xi_c, xi_q
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
    "analyze",
    "MeanFieldPoint",
    "ConvergenceWarning",
    "QuadratureWarning",
    "empirical",
    "NetworkSpec",
    "empirical_nngp",
    "empirical_ntk",
    "plotting",
    "__version__",
]


def __getattr__(name):
    # plotting imports matplotlib: load it on first use, not at start-up
    if name == "plotting":
        import importlib

        return importlib.import_module(".plotting", __name__)
    raise AttributeError(f"module 'meanfield' has no attribute {name!r}")
