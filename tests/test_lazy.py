"""_lazy.lazy_exports: PEP 562 re-exports load their submodule on first use and list themselves in dir()."""

import subprocess
import sys

import pytest

from ncollapse._lazy import lazy_exports


def test_exports_resolve_to_the_submodule_objects():
    getattr_, dir_ = lazy_exports("ncollapse", {"simplex_etf": "geometry"})
    from ncollapse.geometry import simplex_etf

    assert getattr_("simplex_etf") is simplex_etf
    assert "simplex_etf" in dir_()


def test_unknown_name_is_an_attribute_error():
    getattr_, _ = lazy_exports("ncollapse", {"simplex_etf": "geometry"})
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        getattr_("nope")


def test_submodule_loads_only_on_first_use():
    code = ("import sys, ncollapse.data as d; assert 'ncollapse.data.longtail' not in sys.modules; "
            "d.longtail_counts; print('ncollapse.data.longtail' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "True"
