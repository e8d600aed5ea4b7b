"""ncollapse.config_check: the one checker of config keys, names and value types."""

import pytest

from ncollapse.config_check import check_choice, check_keys, check_type, hint, kind_of


def test_hint_suggests_the_closest_name_or_lists_them():
    assert hint("lrr", ["lr", "momentum"]) == "; did you mean 'lr'?"
    assert hint("zzz", ["b", "a"]) == "; valid: a, b"
    assert hint("zzz", []) == "; valid: none"


def test_check_keys_names_the_first_unknown_key():
    check_keys({"lr": 1}, {"lr", "momentum"}, lambda k: f"unknown {k}")
    with pytest.raises(ValueError, match=r"^cfg: unknown key optim.momentun; did you mean 'momentum'\?$"):
        check_keys({"lr": 1, "momentun": 0.9}, ("lr", "momentum"), lambda k: f"cfg: unknown key optim.{k}")


def test_check_choice_checks_scalars_and_each_item_of_a_tuple():
    assert check_choice("sgd", ("sgd", "adamw"), "optim.name") == "sgd"
    assert check_choice(("crop",), ("crop", "flip"), "data.augment") == ("crop",)
    with pytest.raises(ValueError, match=r"optim.name == 'sdg', must be one of sgd, adamw; did you mean 'sgd'\?"):
        check_choice("sdg", ("sgd", "adamw"), "optim.name")
    with pytest.raises(ValueError, match=r"data.augment\[1\] == 'cut'"):
        check_choice(("crop", "cut"), ("crop", "flip"), "data.augment")


@pytest.mark.parametrize("value, kind, expected", [
    (3, float, 3.0), (True, bool, True), ("a", str, "a"), ([1, 2], tuple[int, ...], (1, 2)), ((1,), list, [1]),
    ({"w": 1}, dict, {"w": 1}),
])
def test_check_type_returns_the_declared_form(value, kind, expected):
    out = check_type(value, kind, "k")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, kind, exc, words", [
    (True, int, TypeError, "k must be an integer; got bool True"),
    ("0.1", float, TypeError, "k must be a number; got str '0.1'"),
    (float("nan"), float, ValueError, "k is NaN"),
    ("crop", tuple[str, ...], TypeError, "k must be a list"),
    ([1, "2"], tuple[int, ...], TypeError, "k[1] must be an integer"),
])
def test_check_type_errors_name_the_key(value, kind, exc, words):
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        check_type(value, kind, "k")


def test_kind_of_a_default():
    assert kind_of(0.5) is float and kind_of(False) is bool and kind_of([]) is list
    assert check_type([1, 2], kind_of([0.1]), "eps") == (1.0, 2.0)
