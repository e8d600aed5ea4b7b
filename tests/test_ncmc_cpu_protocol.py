"""The NCMC CPU protocol (benchmarks/ncmc_cpu.py): committed configs match the generator, one budget for every
method, every config is planned (the paired interval is tested in test_report_compare.py)."""

from pathlib import Path


from ncollapse.train import config_from_dict, dumps_toml, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_committed_configs_are_the_generated_ones(bench):
    table = bench.configs()
    files = sorted(p.stem for p in (ROOT / bench.CONFIGS).glob("*.toml"))
    assert files == sorted(table), "run `python benchmarks/ncmc_cpu.py --write-configs`"
    for stem, (_, _, cfg) in table.items():
        path = ROOT / bench.CONFIGS / f"{stem}.toml"
        assert load_config(path) == config_from_dict(cfg, stem)
        assert path.read_text().endswith(dumps_toml(config_from_dict(cfg, stem)))


def test_same_optimiser_and_budget_for_every_method(bench):
    """One budget for every config except the Loss P runs off the protocol (the diagnosis, Fig. 4 under the long
    budget), which change the learning rate, weight decay or epochs only."""
    budget = lambda c: (c["optim"]["lr"], c["optim"]["weight_decay"], c["train"]["epochs"],  # noqa: E731
                        c["train"]["batch_size"], c["schedule"]["name"], c["train"]["threads"], c["model"]["name"])
    configs = bench.configs()
    assert len({budget(c) for stem, (_, _, c) in configs.items() if not bench.off_protocol(stem)}) == 1
    protocol = budget(configs[f"{bench.DIAGNOSIS_SETTING}_lossp"][2])
    off = [stem for stem in configs if bench.off_protocol(stem)]
    assert len(off) == len(bench.DIAGNOSIS) + 3 * len(bench.PENALTY_SETTINGS)
    for stem in off:
        changed = [a != b for a, b in zip(budget(configs[stem][2]), protocol)]
        assert 1 <= sum(changed) <= 2 and not any(changed[3:]), stem
        assert configs[stem][1] == "lossp"
    theta0 = [c for _, _, c in bench.configs().values() if c["model"].get("theta") == 0]
    assert theta0 and all(c["eval"]["decision"] == "gcr" for c in theta0)


def test_plan_runs_every_config_and_main_cells_on_every_seed(bench):
    runs = bench.plan()
    assert {r["config"] for r in runs} == set(bench.configs())
    assert len({r["name"] for r in runs}) == len(runs)
    main = [r for r in runs if r["main"]]
    assert len(main) == len(bench.SETTINGS) * len(bench.METHODS) * len(bench.SEEDS)
    assert bench.argv_of(runs[0])[:2] == ["train", "--config"] and "--out" not in bench.argv_of(runs[0])
