import importlib

import pytest

from ncollapse import _extras


def test_require_cvxpy_returns_a_conic_solver():
    pytest.importorskip("cvxpy", reason="the theory extra is not installed")
    cp, solver = _extras.require_cvxpy()
    assert solver in _extras.CONIC_SOLVERS and solver in cp.installed_solvers()


def test_missing_extra_names_the_install_command(monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name == "cvxpy":
            raise ImportError("No module named 'cvxpy'")
        return real(name, *args)

    monkeypatch.setattr(_extras.importlib, "import_module", fake)
    with pytest.raises(_extras.MissingExtraError, match=r"the UFM certificate needs cvxpy .*ncollapse\[theory\]"):
        _extras.require_cvxpy("the UFM certificate")
    assert issubclass(_extras.MissingExtraError, ValueError)  # the CLI reports it in one line, exit 2
