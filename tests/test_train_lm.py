"""train.task = "lm": a tiny GPT on synthetic text; run directory, exact resume, NC at vocabulary size, DDP."""

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

pytest.importorskip("tokenizers", reason="the [lm] extra (Hugging Face tokenizers) is not installed")

import ncollapse.train.lm as lm  # noqa: E402
from ncollapse import measure  # noqa: E402
from ncollapse.cli import main  # noqa: E402
from ncollapse.data.text import load_corpus  # noqa: E402
from ncollapse.stats import ClassStats, NCCCounts  # noqa: E402
from ncollapse.train import load_checkpoint, load_config, train  # noqa: E402
from ncollapse.train.dist import DistContext  # noqa: E402
from ncollapse.train.lm_eval import lm_nc_report, nc_pass, window_starts, windows  # noqa: E402
from conftest import interrupt_at  # noqa: E402

WORDS = ("a b c the of and to in is was he that it for on with as his they be at one have this from or had by "
         "word but what some we can out other were all there when up use your how said an each she which").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    for i in range(2):
        lines = (" ".join(rng.choice(WORDS, 10, p=np.linspace(2, 0.1, len(WORDS)) / np.linspace(2, 0.1, len(WORDS)).sum()))
                 for _ in range(300))
        (folder / f"f{i}.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One token cache for the module: the corpus is tokenised once."""
    return tmp_path_factory.mktemp("cache")


def _overrides(corpus, cache, *extra):
    return ['train.task="lm"', 'optim.name="adamw"', "optim.lr=0.003", 'schedule.name="cosine"', "train.batch_size=8",
            "train.threads=1", "eval.batch_size=256", f'lm.text=["{corpus}"]', f'lm.cache_dir="{cache}"',
            "lm.vocab_size=300", "lm.val_fraction=0.1", "lm.context=16", "lm.layers=1", "lm.width=16", "lm.heads=2",
            "lm.tokens=4096", "lm.warmup_tokens=256", "lm.eval_every=1024", "lm.nc_every=2048", "lm.nc_tokens=1024",
            "lm.val_tokens=512", "lm.min_count=3", "lm.group_thresholds=[200, 20]", *extra]


def _records(path):
    out = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for key in ("time_s", "train_tokens_per_s"):
            record.pop(key)
        out.append(record)
    return out


def test_lm_run_directory_and_metrics(tmp_path, corpus, cache):
    summary = train(load_config(None, _overrides(corpus, cache)), tmp_path / "run", device="cpu")
    run = tmp_path / "run"
    assert summary["status"] == "finished" and summary["tokens"] == 4096 and summary["steps"] == 32
    records = _records(run / "metrics.jsonl")
    assert [r["tokens"] for r in records] == [1024, 2048, 3072, 4096] and [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert "nc/cdnv" not in records[0] and "nc/cdnv" in records[1] and "nc_test/cdnv" in records[3]
    last = records[-1]
    assert last["val_ppl"] == pytest.approx(np.exp(last["val_loss"])) and last["val_loss"] < records[0]["val_loss"]
    assert last["nc/num_classes"] == 300 and last["nc/tokens_in_pass"] == 1024
    assert 0 < last["nc/vocab_share"] == last["nc/num_measured_classes"] / 300 < 1
    assert 0 < last["nc/token_share"] == last["nc/num_samples"] / 1024 <= 1
    for key in ("nc1", "nc1_quotient", "cdnv", "gnc2_log_var", "unc3", "duality_cos_mean", "self_duality",
                "ncc_agreement", "cdnv_head"):
        assert np.isfinite(last[f"nc/{key}"]) and np.isfinite(last[f"nc_test/{key}"]), key
    assert main(["evaluate", "--run", str(run), "--device", "cpu"]) == 2  # LM runs: the report reads them
    info = json.loads((run / "run.json").read_text())
    assert info["task"] == "lm" and info["num_classes"] == 300 and (run / "tokenizer.json").is_file()
    assert summary["final_val_loss"] == last["val_loss"]


def test_interrupted_lm_run_resumes_bit_identical(tmp_path, corpus, cache, monkeypatch):
    cfg = load_config(None, _overrides(corpus, cache, "lm.dropout=0.1"))
    torch.manual_seed(123)  # the global RNG's state must not matter: dropout draws from the run's own generator
    train(cfg, tmp_path / "whole", device="cpu")
    interrupt_at(monkeypatch, lm, [5, 17])
    first = train(cfg, tmp_path / "cut", device="cpu")
    assert first["status"] == "interrupted" and first["step"] == 6 and first["signal"] == 130
    assert train(cfg, tmp_path / "cut", device="cpu", resume=True)["step"] == 18
    assert train(cfg, tmp_path / "cut", device="cpu", resume=True)["status"] == "finished"
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _records(tmp_path / "whole" / "metrics.jsonl") == _records(tmp_path / "cut" / "metrics.jsonl")
    other = load_config(None, _overrides(corpus, cache, "lm.width=32"))
    with pytest.raises(ValueError, match="another config .*lm.width"):
        train(other, tmp_path / "cut", device="cpu", resume=True)


def test_nc_pass_equals_class_stats_of_the_same_features(tmp_path, corpus, cache):
    cfg = load_config(None, _overrides(corpus, cache))
    ctx = DistContext(0, 1, torch.device("cpu"))
    run = lm.build_lm_run(cfg, ctx)
    rows = run.nc_rows["nc"]
    result = nc_pass(run.model, rows, ctx, batch_size=5, min_count=3)
    with torch.no_grad():
        h, logits = run.model.eval()(rows[:, :-1])
    h, y = h.reshape(-1, 16).double(), rows[:, 1:].reshape(-1)
    direct = ClassStats(300, 16, rare_below=3)
    direct.update(h, y)
    assert torch.equal(result.stats.counts, direct.counts)
    assert torch.allclose(result.stats.means, direct.means, atol=1e-6)
    assert torch.allclose(result.stats.scatter, direct.scatter, rtol=1e-5, atol=1e-4)
    W = run.model.head.weight.detach().double()
    ncc = NCCCounts.from_stats(direct, W=W)
    ncc.update(h, y)
    with pytest.warns(UserWarning):
        want = measure(direct, W=W, ncc=ncc, min_count=3, group_counts=list(run.train_counts),
                       group_thresholds=(200, 20))
    got = lm_nc_report(result, run.train_counts, (200, 20), 3, "nc")
    for key in ("nc1", "nc1_quotient", "cdnv", "gnc2_log_var", "unc3", "duality_cos_mean", "self_duality",
                "ncc_agreement", "ncc_accuracy", "classifier_accuracy", "num_measured_classes", "cdnv_head", "cdnv_medium",
                "nc1_quotient_tail"):
        assert got[f"nc/{key}"] == pytest.approx(want[key], rel=1e-4, abs=1e-7), key
    assert got["nc/classifier_accuracy"] == pytest.approx(float((logits.argmax(-1).reshape(-1) == y).double().mean()))
    with pytest.raises(ValueError, match=r"decisions have shape \(3,\); expected \(4,\), one per sample"):
        ncc.update(h[:4], y[:4], decisions=y[:3])
    kept = want["class_counts"] >= 3
    assert got["nc/token_share"] == pytest.approx(want["class_counts"][kept].sum() / len(y))


def test_windows_and_bad_lm_configs(tmp_path, corpus, cache):
    assert window_starts(100, 10, 35, spread=False).tolist() == [0, 10, 20, 30]
    assert window_starts(100, 10, 25, spread=True).tolist() == [0, 44, 89]
    assert window_starts(100, 10, 0, spread=False).tolist() == list(range(0, 90, 10))
    tokens = torch.arange(50)
    assert windows(tokens, np.array([0, 10, 20]), 4, DistContext(1, 2, torch.device("cpu"))).tolist() == [
        [10, 11, 12, 13, 14]]
    with pytest.raises(ValueError, match="hold no window"):
        window_starts(5, 10, 10, spread=False)
    with pytest.raises(ValueError, match="lm.width == 18 is not divisible by lm.heads == 4"):
        load_config(None, ['train.task="lm"', 'schedule.name="cosine"', "lm.width=18", "lm.heads=4"])
    with pytest.raises(ValueError, match="schedule.name = 'cosine' or 'constant'"):
        load_config(None, ['train.task="lm"'])
    with pytest.raises(ValueError, match="lm.vocab_size == 100, must be >= 256"):
        load_config(None, ['train.task="lm"', 'schedule.name="cosine"', "lm.vocab_size=100"])
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.txt").write_bytes(b"\x00\x01")
    cfg = load_config(None, _overrides(tmp_path / "bin", cache))
    with pytest.raises(ValueError, match="looks binary"):
        train(cfg, tmp_path / "run", device="cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out, overrides):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    train(load_config(None, overrides), out, device="cpu")


def test_two_process_ddp_lm_run_logs_the_nc_of_its_final_model(tmp_path, corpus, cache):
    """Two gloo ranks train (each its own batches) and shard the NC passes; the logged NC equals one process's
    pass over the final model, so the all-reduced statistics cover every window once."""
    overrides = _overrides(corpus, cache, "lm.tokens=2048")
    load_corpus([str(corpus)], 300, 0.1, cache_dir=cache)  # tokenise once, before the ranks start
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp"), overrides), nprocs=2, join=True)
    last = _records(tmp_path / "ddp" / "metrics.jsonl")[-1]
    cfg = load_config(None, overrides)
    ctx = DistContext(0, 1, torch.device("cpu"))
    run = lm.build_lm_run(cfg, ctx)
    run.model.load_state_dict(load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model"])
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["world_size"] == 2
    one = lm_nc_report(nc_pass(run.model, run.nc_rows["nc"], ctx, 8, 3), run.train_counts, (200, 20), 3, "nc")
    for key in ("nc/num_samples", "nc/cdnv", "nc/nc1_quotient", "nc/unc3", "nc/ncc_agreement"):
        assert last[key] == pytest.approx(one[key], rel=1e-4), key


def test_cli_lm_run_and_bad_text_exit_2(tmp_path, corpus, cache, capsys):
    toml = tmp_path / "lm.toml"
    toml.write_text('[train]\ntask = "lm"\n')
    args = [a for o in _overrides(corpus, cache, "lm.tokens=512", "lm.nc_every=0")
            if not o.startswith("train.task") for a in ("--set", o)]
    assert main(["train", "--config", str(toml), *args, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert "final val loss" in capsys.readouterr().out
    (tmp_path / "latin1.txt").write_bytes("na\u00efve".encode("latin-1"))
    args += ["--set", f'lm.text=["{tmp_path / "latin1.txt"}"]']
    assert main(["train", "--config", str(toml), *args, "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "latin1.txt is not UTF-8" in err[0]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "lm").glob("*.toml")),
                         ids=lambda p: p.name)
def test_lm_configs_load(path):
    cfg = load_config(path)
    assert cfg.train.task == "lm" and cfg.lm.tokens >= cfg.lm.eval_every and not cfg.lm.tied
