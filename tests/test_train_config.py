"""Config parsing/validation and the learning-rate schedules (pure functions of the step)."""

import math
import tomllib

import pytest

from ncollapse.train.config import Config, ScheduleConfig, config_from_dict, dumps_toml, load_config, parse_override
from ncollapse.train.schedule import lr_at


def test_defaults_are_the_literature_protocol():
    cfg = Config()
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr, cfg.optim.momentum) == (200, 128, 0.1, 0.9)
    assert (cfg.optim.weight_decay, cfg.schedule.warmup_epochs, cfg.schedule.milestones) == (2e-4, 5.0, (160, 180))


def test_toml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[optim]\nlr = 0.05\n[model]\nname = "lenet"\noptions = {widths = [3, 4]}\n')
    cfg = load_config(path, ["data.root=../shared/data/mnist", 'data.augment=["flip"]', "train.epochs=7",
                             "optim.weight_decay=1e-3", "data.balanced=true"])
    assert cfg.optim.lr == 0.05 and cfg.model.name == "lenet" and cfg.model.options == {"widths": [3, 4]}
    assert cfg.data.root == "../shared/data/mnist" and cfg.data.augment == ("flip",)
    assert cfg.train.epochs == 7 and cfg.optim.weight_decay == 1e-3 and cfg.data.balanced is True
    assert config_from_dict(tomllib.loads(dumps_toml(cfg))) == cfg
    assert isinstance(load_config(None, ["optim.lr=1"]).optim.lr, float)  # an int literal for a float key


@pytest.mark.parametrize("text, exc, words", [
    ("[optim]\nlrr = 0.1\n", ValueError, ["optim.lrr", "did you mean 'lr'"]),
    ("[optimizer]\nlr = 0.1\n", ValueError, ["[optimizer]", "did you mean 'optim'"]),
    ("[optim]\nlr = '0.1'\n", TypeError, ["optim.lr", "must be a number", "str"]),
    ("[train]\nepochs = 2.5\n", TypeError, ["train.epochs", "integer"]),
    ("[data]\naugment = 'crop'\n", TypeError, ["data.augment", "list"]),
    ("[optim]\nname = 'sdg'\n", ValueError, ["optim.name", "did you mean 'sgd'"]),
    ("[optim]\nlr = -0.1\n", ValueError, ["optim.lr == -0.1", "> 0.0"]),
    ("[schedule]\nmilestones = [180, 160]\n", ValueError, ["schedule.milestones", "increasing"]),
    ("[optim\n", ValueError, ["not valid TOML"]),
    ("[model]\nname = 'resnet33'\n", ValueError, ["model.name == 'resnet33'", "did you mean 'resnet32'"]),
    ("[model]\nhead = 'ettf'\n", ValueError, ["model.head == 'ettf'", "did you mean 'etf'"]),
    ("[loss]\nname = 'ldamm'\n", ValueError, ["loss.name == 'ldamm'", "did you mean 'ldam'"]),
    ("[data]\nname = 'cifar11'\n", ValueError, ["data.name == 'cifar11'", "did you mean 'cifar10'"]),
    ("[data]\naugment = ['crop', 'flp']\n", ValueError, ["data.augment[1] == 'flp'", "did you mean 'flip'"]),
])
def test_bad_configs_name_the_key(tmp_path, text, exc, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(exc) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and all(w in message for w in words), message


def test_bad_overrides():
    with pytest.raises(ValueError, match="section.key=value"):
        parse_override("lr=0.1")
    with pytest.raises(ValueError, match="did you mean 'train'"):
        load_config(None, ["trian.epochs=3"])
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        load_config(None, ["train.epoch=3"])
    assert parse_override("data.root=a/b") == ("data", "root", "a/b")
    assert parse_override("data.imbalance=0.01") == ("data", "imbalance", 0.01)


def test_multistep_schedule_worked_example():
    """CIFAR-LT protocol (Cao et al. 2019): warm-up over 5 epochs, 0.1 → 0.01 at epoch 160 → 0.001 at 180."""
    cfg = ScheduleConfig()
    spe = 10
    assert lr_at(0, cfg, 0.1, spe, 200) == pytest.approx(0.1 / 50)
    assert lr_at(24, cfg, 0.1, spe, 200) == pytest.approx(0.1 * 25 / 50)
    assert lr_at(49, cfg, 0.1, spe, 200) == pytest.approx(0.1)
    assert lr_at(159 * spe + 9, cfg, 0.1, spe, 200) == pytest.approx(0.1)
    assert lr_at(160 * spe, cfg, 0.1, spe, 200) == pytest.approx(0.01)
    assert lr_at(180 * spe, cfg, 0.1, spe, 200) == pytest.approx(0.001)
    assert lr_at(199 * spe + 9, cfg, 0.1, spe, 200) == pytest.approx(0.001)


def test_cosine_schedule_closed_form():
    """η_t = η_min + ½(η − η_min)(1 + cos(π t/T)) after the warm-up (Loshchilov & Hutter 2017, eq. 5)."""
    cfg = ScheduleConfig(name="cosine", warmup_epochs=1.0, min_lr=0.001)
    spe, epochs, lr = 4, 5, 0.2
    for step in range(4, 20):
        t = (step - 4) / 16
        assert lr_at(step, cfg, lr, spe, epochs) == pytest.approx(0.001 + 0.5 * 0.199 * (1 + math.cos(math.pi * t)))
    assert lr_at(12, cfg, lr, spe, epochs) == pytest.approx(0.1005)
    assert lr_at(3, cfg, lr, spe, epochs) == pytest.approx(0.2)


CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("baselines/*.toml")), ids=lambda p: p.name)
def test_baseline_configs_follow_the_protocol(path):
    cfg = load_config(path)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.name, cfg.optim.lr, cfg.optim.momentum) == (
        200, 128, "sgd", 0.1, 0.9)
    assert (cfg.optim.weight_decay, cfg.schedule.name, cfg.schedule.milestones, cfg.schedule.warmup_epochs) == (
        2e-4, "multistep", (160, 180), 5.0)
    assert cfg.data.imbalance == 0.01 and cfg.data.name in ("cifar10", "cifar100", "svhn", "stl10")


def test_quick_configs_load():
    paths = sorted(CONFIGS.glob("quick/*.toml"))
    assert "mnist_lt_ce.toml" in [p.name for p in paths]
    for path in paths:
        cfg = load_config(path, ["data.root=../shared/data/x"])
        assert cfg.data.imbalance == 0.01 and cfg.train.epochs <= 10, path
