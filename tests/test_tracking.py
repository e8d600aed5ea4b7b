"""NCTracker: the classifier it finds, eval_pass and online against hand-collected features (float64 reference
through ncollapse.measure_features), the schedule, next-token pairing, the run directory the reports read, and
resume through the state contract."""

import csv
import importlib.util
import json

import pytest
import torch
from torch import nn

import ncollapse
from ncollapse import NCTracker
from ncollapse.report.html import write_report
from ncollapse.report.runs import load_run
from ncollapse.report.tables import load_runs
from ncollapse.tracking import find_classifier

K, D = 4, 10


def _data(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    x = torch.randn(n, D, generator=g) + 3 * torch.eye(D)[y]
    return x, y


def _model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, K))


def _loader(x, y, batch=64):
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)]


def _reference(model, x, y, **kwargs):
    """measure_features on the penultimate features computed by hand in float64."""
    with torch.no_grad():
        h = model[:-1].eval()(x).double()
    head = model[-1]
    return ncollapse.measure_features(h, y, W=head.weight.double(), b=head.bias.double(), num_classes=K, **kwargs)


def _train_epoch(model, loader, tracker=None, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for xb, yb in loader:
        loss = nn.functional.cross_entropy(model(xb), yb)
        if tracker is not None and tracker.mode == "online":
            tracker.update(yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if tracker is not None:
            tracker.step()


def test_find_classifier_default_named_and_errors():
    model = _model()
    assert find_classifier(model, K) == ("3", model[3])
    assert find_classifier(model, 16, "0")[0] == "0"
    with pytest.raises(ValueError, match="has 4 outputs, not num_classes=5"):
        find_classifier(model, 5)
    with pytest.raises(ValueError, match="ambiguous classifier.*'aux'"):
        find_classifier(nn.ModuleDict({"aux": nn.Linear(3, K), "head": nn.Linear(3, K)}), K)
    block = nn.Sequential(nn.Linear(3, K), nn.ReLU(), nn.Linear(K, 3))  # a feed-forward layer K wide
    assert find_classifier(nn.Sequential(block, nn.Linear(3, K)), K)[0] == "1"
    with pytest.raises(ValueError, match="no nn.Linear"):
        find_classifier(nn.Sequential(nn.ReLU()), K)
    with pytest.raises(ValueError, match="no module named 'fc'"):
        find_classifier(model, K, "fc")
    with pytest.raises(TypeError, match="not an nn.Linear"):
        find_classifier(model, K, "1")


def test_bad_arguments_name_the_problem():
    model, (x, y) = _model(), _data()
    with pytest.raises(ValueError, match="needs loader="):
        NCTracker(model, K)
    with pytest.raises(ValueError, match="mode == 'fast'"):
        NCTracker(model, K, _loader(x, y), mode="fast")
    with pytest.raises(ValueError, match="no schedule"):
        NCTracker(model, K, _loader(x, y), every_n_epochs=0)
    with pytest.raises(TypeError, match="cache_mb must be a number"):
        NCTracker(model, K, _loader(x, y), cache_mb="1GB")
    with pytest.raises(ValueError, match="every_n_steps == -1"):
        NCTracker(model, K, _loader(x, y), every_n_steps=-1)
    with pytest.raises(ValueError, match="task='next_token' needs features"):
        NCTracker(model, K, _loader(x, y), task="next_token").measure_now()
    online = NCTracker(model, K, mode="online")
    with pytest.raises(ValueError, match="found no features"):
        online.update(y[:8])
    model.train()
    model(x[:8])
    with pytest.raises(ValueError, match="do not pair with labels"):
        online.update(y[:7])
    with pytest.raises(ValueError, match="is for mode='online'"):
        NCTracker(model, K, _loader(x, y)).update(y)


def test_eval_pass_equals_float64_reference_and_restores_mode():
    x, y = _data()
    model = _model(dropout=0.5)
    model.train()
    tracker = NCTracker(model, K, _loader(x, y))
    record = tracker.measure_now()
    assert model.training and all(m.training for m in model.modules())
    want = _reference(model, x, y)
    for key in ("nc1", "cdnv", "etf_error_means", "self_duality", "duality_papyan"):
        assert record[f"nc/{key}"] == pytest.approx(want[key], rel=1e-5)
    assert record["nc/ncc_mismatch"] == pytest.approx(want["ncc_mismatch"], abs=1 / len(y))
    assert record["train_eval_acc"] == pytest.approx(want["classifier_accuracy"], abs=1 / len(y))
    assert record["nc/num_samples"] == len(y)


def test_ncc_from_cache_equals_second_pass():
    x, y = _data()
    model = _model()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    cached = NCTracker(model, K, _loader(x, y)).measure_now()
    one_pass = len(calls)
    second = NCTracker(model, K, _loader(x, y), cache_mb=0.0).measure_now()
    assert one_pass == 4 and len(calls) - one_pass == 8  # cache_mb=0: the NC4 pass runs the loader again
    for key in ("nc/ncc_accuracy", "nc/ncc_mismatch", "train_eval_acc", "nc/nc1"):
        assert cached[key] == second[key]


def test_schedule_by_steps_and_epochs():
    x, y = _data()
    loader = _loader(x, y)
    model = _model()
    by_steps = NCTracker(model, K, loader, every_n_steps=3)
    by_epochs = NCTracker(model, K, loader, every_n_epochs=2)
    for _ in range(4):
        _train_epoch(model, loader, by_steps)
        by_epochs.step_count += len(loader)
        by_steps.epoch_end()
        by_epochs.epoch_end()
    assert [r["step"] for r in by_steps.history] == [3, 6, 9, 12, 15]
    assert [r["epoch"] for r in by_steps.history] == [1, 2, 3, 4, 5]  # measurement index: one line per point
    assert [r["epoch"] for r in by_epochs.history] == [2, 4]


def test_online_without_drift_equals_eval_pass_and_adds_no_forward():
    """lr = 0 and no dropout: the training forwards see the features an eval pass sees, so the online window over
    one epoch gives the eval-pass metrics (NC4 aside); the tracker adds no forward of its own."""
    x, y = _data()
    loader = _loader(x, y)
    model = _model()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    online = NCTracker(model, K, mode="online")
    _train_epoch(model, loader, online, lr=0.0)
    record = online.epoch_end()
    assert len(calls) == len(loader)
    model.eval()
    model(x[:5])  # an eval-mode forward (validation) is not part of the window
    assert online._features is None
    want = _reference(model, x, y)
    for key in ("nc1", "cdnv", "self_duality"):
        assert record[f"nc/{key}"] == pytest.approx(want[key], rel=1e-5)
    assert "nc/ncc_mismatch" not in record and "train_eval_acc" not in record
    with pytest.raises(ValueError, match="online window is empty"):  # each measurement starts a new window
        online.measure_now()


def test_next_token_pairs_position_t_with_label_t_plus_one():
    torch.manual_seed(0)
    vocab, d = 12, 8
    emb, head = nn.Embedding(vocab, d), nn.Linear(d, vocab)
    model = nn.Sequential(emb, nn.Tanh(), head)
    tokens = torch.randint(0, vocab, (6, 9))
    labels = tokens.clone()
    labels[:, -3:] = -100  # padding
    loader = [(tokens[i:i + 3], labels[i:i + 3]) for i in (0, 3)]
    record = NCTracker(model, vocab, loader, task="next_token").measure_now()
    with torch.no_grad():
        h = model[:2](tokens)[:, :-1].double()
    nxt = labels[:, 1:]
    keep = nxt != -100
    want = ncollapse.measure_features(h[keep], nxt[keep], W=head.weight.double(), b=head.bias.double(),
                                      num_classes=vocab)
    assert record["nc/num_samples"] == int(keep.sum())
    assert record["nc/nc1"] == pytest.approx(want["nc1"], rel=1e-5)  # float32 features, K > d: Σ_B is ill-conditioned
    assert record["nc/ncc_accuracy"] == pytest.approx(want["ncc_accuracy"])


def test_run_directory_is_read_by_report_and_table(tmp_path):
    x, y = _data()
    loader = _loader(x, y)
    model = _model()
    tracker = NCTracker(model, K, loader, split="test", run_dir=tmp_path / "run", method="ce", dataset="toy",
                        seed=3, config={"optim": {"lr": 0.1}, "batch_size": 64}, tensorboard=False)
    for _ in range(2):
        _train_epoch(model, loader, tracker)
        tracker.epoch_end()
    summary = tracker.finish()
    tracker.close()
    run = load_run(tmp_path / "run")
    assert [m["epoch"] for m in run.metrics] == [1, 2] and "nc_test/nc1" in run.last
    assert run.nc_state["stats"].counts.tolist() == [60] * K
    assert run.summary["final_test_acc"] == run.last["test_acc"] == summary["final_test_acc"]
    attrs = load_runs([tmp_path])[0].attrs
    assert (attrs["dataset"], attrs["method"], attrs["seed"], attrs["lr"]) == ("toy", "CE", 3, 0.1)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["method"] == "ce"
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [float(r["nc_test/nc1"]) for r in rows] == [m["nc_test/nc1"] for m in run.metrics]
    assert write_report(tmp_path / "run").is_file()


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ValueError, match="run_dir .* is an existing file"):
        NCTracker(_model(), K, _loader(*_data()), run_dir=tmp_path / "taken")


def test_run_directory_of_another_run_is_refused(tmp_path):
    x, y = _data()
    first = NCTracker(_model(), K, _loader(x, y), run_dir=tmp_path, tensorboard=False)
    first.measure_now()
    again = NCTracker(_model(), K, _loader(x, y), run_dir=tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match="already holds a run"):
        again.measure_now()


def _same_records(got, want, rel=1e-12):
    """Equal records up to the measuring time; floats to ``rel``."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert set(a) == set(b)
        for key in set(a) - {"nc_seconds"}:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=rel * 1e-3), key


@pytest.mark.parametrize("mode", ["eval_pass", "online"])
def test_resume_from_state_dict_continues_the_tracking(tmp_path, mode):
    """Stop after 3 of 5 epochs (online: in the middle of a measuring window), restore model, optimiser-free SGD
    and tracker from a saved state: the history and metrics.jsonl equal an uninterrupted run's."""
    x, y = _data()
    loader = _loader(x, y)
    kwargs = dict(mode=mode, every_n_epochs=2, tensorboard=False)

    def run(model, tracker, epochs):
        for _ in range(epochs):
            _train_epoch(model, loader, tracker)
            tracker.epoch_end()

    whole_model = _model()
    whole = NCTracker(whole_model, K, loader, run_dir=tmp_path / "whole", **kwargs)
    run(whole_model, whole, 5)

    model = _model()
    first = NCTracker(model, K, loader, run_dir=tmp_path / "resumed", **kwargs)
    run(model, first, 3)
    saved = {"model": model.state_dict(), "tracker": first.state_dict()}
    torch.save(saved, tmp_path / "ckpt.pt")
    first.close()

    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model = _model(seed=1)
    model.load_state_dict(saved["model"])
    tracker = NCTracker(model, K, loader, run_dir=tmp_path / "resumed", **kwargs)
    tracker.load_state_dict(saved["tracker"])
    run(model, tracker, 2)
    # a resumed online window folds its float32 batches into the statistics at another point (state_dict reads
    # the state): equal to float32 rounding of the within-class products, not to the last bit
    rel = 1e-12 if mode == "eval_pass" else 1e-6
    _same_records(tracker.history, whole.history, rel)
    _same_records(load_run(tmp_path / "resumed").metrics, load_run(tmp_path / "whole").metrics, rel)
    with pytest.raises(ValueError, match="not an NCTracker state"):
        tracker.load_state_dict({"step": 1})


def test_reset_forgets_counts_and_close_removes_the_hook():
    x, y = _data()
    model = _model()
    tracker = NCTracker(model, K, _loader(x, y), every_n_steps=1)
    tracker.step()
    tracker.reset()
    assert tracker.step_count == 0 and tracker.history == []
    tracker.close()
    assert not model[3]._forward_pre_hooks


def test_lazy_export():
    assert ncollapse.NCTracker is NCTracker and "NCTracker" in dir(ncollapse)


def test_ncc_counts_take_known_decisions():
    """NCCCounts.update(..., decisions=argmax(W h + b)) counts what its own classifier search counts."""
    x, y = _data()
    stats = ncollapse.ClassStats.from_features(x.double(), y, K)
    W, b = torch.randn(K, D, dtype=torch.float64), torch.randn(K, dtype=torch.float64)
    searched, given = (ncollapse.NCCCounts.from_stats(stats, W=W, b=b) for _ in range(2))
    searched.update(x.double(), y)
    given.update(x.double(), y, (x.double() @ W.T + b).argmax(1))
    for key, value in searched.finalize().items():
        assert torch.equal(value, given.finalize()[key])
    with pytest.raises(ValueError, match="one per sample"):
        given.update(x, y, y[:3])


def test_integrations_load_their_framework_only_when_imported():
    import subprocess
    import sys

    from ncollapse._extras import MissingExtraError
    from ncollapse.integrations import require

    code = ("import sys, ncollapse, ncollapse.integrations; ncollapse.NCTracker; "
            "print(sorted(m for m in ('lightning', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
    with pytest.raises(MissingExtraError, match=r"the callback needs no_such_framework.*ncollapse\[integrations\]"):
        require("no_such_framework.sub", "the callback")


def test_hf_report_to_all_means_the_installed_loggers():
    pytest.importorskip("transformers", reason="the integrations extra (transformers) is not installed")
    from types import SimpleNamespace

    from ncollapse.integrations.hf import _report_to

    assert _report_to(SimpleNamespace(report_to=["tensorboard"])) == {"tensorboard"}
    assert _report_to(SimpleNamespace(report_to=None)) == set()
    everything = _report_to(SimpleNamespace(report_to="all"))
    assert ("tensorboard" in everything) == (importlib.util.find_spec("tensorboard") is not None)


def test_tracker_files_write_the_same_rows_to_jsonl_and_csv(tmp_path):
    """_tracking_files.TrackerFiles: metrics.csv holds metrics.jsonl's scalar columns row for row."""
    from ncollapse._tracking_files import TrackerFiles

    x, y = _data()
    model = _model()
    tracker = NCTracker(model, K, loader=_loader(x, y), every_n_epochs=1, run_dir=tmp_path / "run", ncc=False)
    for _ in range(2):
        _train_epoch(model, _loader(x, y), tracker)
        tracker.epoch_end()
    tracker.close()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(rows) == len(table) == 2
    for row, line in zip(rows, table):
        assert float(line["nc/nc1"]) == pytest.approx(row["nc/nc1"], rel=1e-12)
    assert isinstance(tracker.files, TrackerFiles)
