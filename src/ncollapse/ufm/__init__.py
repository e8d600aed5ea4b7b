"""The unconstrained features model (UFM) lab: problem zoo, batched solvers, closed-form theory, experiments.

>>> from ncollapse.ufm import UFMProblem, solve, theory
>>> p = UFMProblem.balanced(4, 5, 8, loss="mse")
>>> result = solve(p, optimizer="lbfgs", steps=500)
>>> abs(result.objective[0] / theory.predict(p)["loss"] - 1) < 1e-6
True
"""

from . import certify, theory
from .problem import UFMProblem
from .solve import SolverOptions, UFMDivergenceError, UFMResult, group_problems, solve

__all__ = ["UFMProblem", "UFMResult", "UFMDivergenceError", "SolverOptions", "solve", "group_problems", "theory",
           "certify"]
