"""The three tracking recipes of README.md (plain loop, Lightning, Hugging Face) run as written, on tiny models and
data defined here (the names a recipe takes as given), in a temporary working directory."""

import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from ncollapse.report.runs import load_run

README = Path(__file__).resolve().parents[1] / "README.md"


def _recipe(name: str) -> str:
    match = re.search(rf"<!-- recipe: {name} -->\n```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert match, f"README.md has no recipe {name!r}"
    return match.group(1)


def _digits_loaders():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = torch.tensor(digits.data[:512], dtype=torch.float32) / 16, torch.tensor(digits.target[:512])
    data = torch.utils.data.TensorDataset(x, y)
    return (torch.utils.data.DataLoader(data, batch_size=64, shuffle=True),
            torch.utils.data.DataLoader(data, batch_size=256))


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_plain_loop_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_loader, eval_loader = _digits_loaders()
    model = _mlp()
    names = {"torch": torch, "model": model, "train_loader": train_loader, "eval_loader": eval_loader, "epochs": 2,
             "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
    exec(_recipe("plain"), names)
    run = load_run(tmp_path / "runs" / "my_model")
    assert [m["epoch"] for m in run.metrics] == [1, 2] and run.summary is not None
    assert names["record"]["nc/nc1"] == run.last["nc/nc1"]


def test_lightning_recipe(tmp_path, monkeypatch):
    lightning = pytest.importorskip("lightning", reason="the integrations extra (lightning) is not installed")
    monkeypatch.chdir(tmp_path)
    train_loader, eval_loader = _digits_loaders()

    class Lit(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    names = {"lightning": lightning, "lit_model": Lit(), "train_loader": train_loader, "eval_loader": eval_loader,
             "epochs": 2}
    exec(_recipe("lightning"), names)
    callback = names["trainer"].callbacks[0]
    assert [r["epoch"] for r in callback.tracker.history] == [1, 2]
    assert len(load_run(Path(names["trainer"].log_dir) / "nc").metrics) == 2


def test_hf_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers", reason="the integrations extra (transformers) is not installed")
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (the integrations extra has it)")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=8, num_labels=3)
    rows = [{"input_ids": torch.tensor([i % 3] * 3 + [5 + i % 11] * 5), "labels": torch.tensor(i % 3)}
            for i in range(48)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=4, per_device_train_batch_size=8,
                                          report_to=[], use_cpu=True, disable_tqdm=True)
    names = {"transformers": transformers, "hf_model": transformers.BertForSequenceClassification(config),
             "args": args, "train_set": rows, "eval_set": rows}
    exec(_recipe("hf"), names)
    run = load_run(tmp_path / "hf" / "nc")
    assert run.last["nc_test/num_samples"] == 48 and "test_acc" in run.last
    assert os.path.isfile(tmp_path / "hf" / "nc" / "summary.json")
