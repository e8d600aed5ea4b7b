"""Optional dependencies: the ``theory`` extra (cvxpy with an open-source conic solver).

``require_cvxpy()`` returns ``(cvxpy, solver_name)`` with Clarabel preferred and SCS as the fallback, or raises
``MissingExtraError`` (an ImportError that the CLI also reports as a one-line usage error) naming the install
command ``pip install 'ncollapse[theory]'``.
"""

from __future__ import annotations

import importlib

__all__ = ["MissingExtraError", "require_cvxpy", "CONIC_SOLVERS"]

CONIC_SOLVERS = ("CLARABEL", "SCS")
_INSTALL = "pip install 'ncollapse[theory]'"


class MissingExtraError(ImportError, ValueError):
    """An optional dependency is missing; the message says which extra installs it."""


def require_cvxpy(feature: str = "this feature"):
    """(cvxpy module, name of the first installed solver in ``CONIC_SOLVERS``) or ``MissingExtraError``."""
    try:
        cp = importlib.import_module("cvxpy")
    except ImportError:
        raise MissingExtraError(f"{feature} needs cvxpy and a conic solver (Clarabel or SCS); "
                                f"install them with: {_INSTALL}") from None
    installed = set(cp.installed_solvers())
    for name in CONIC_SOLVERS:
        if name in installed:
            return cp, name
    raise MissingExtraError(f"{feature} needs the Clarabel or SCS solver for cvxpy (found {sorted(installed)}); "
                            f"install them with: {_INSTALL}")
