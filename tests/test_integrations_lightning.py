"""ncollapse.integrations.lightning.NCCallback on a tiny LightningModule, offline on the CPU: the records reach the
trainer's TensorBoard and CSV loggers and the run directory, and a fit resumed from a checkpoint (ckpt_path)
resumes the tracking: its history equals an uninterrupted fit's."""

import csv

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch", reason="the integrations extra (lightning) is not installed")

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402

from ncollapse.integrations.lightning import NCCallback  # noqa: E402
from ncollapse.report.runs import load_run  # noqa: E402

K, D = 3, 8


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(D, 12), nn.ReLU())
        self.head = nn.Linear(12, K)

    def forward(self, x):
        return self.head(self.body(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % K
    x = torch.randn(96, D, generator=g) + 2 * torch.eye(D)[y]
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def _fit(root, epochs, ckpt_path=None, mode="eval_pass"):
    callback = NCCallback(K, _loader(), mode=mode, run_dir=root / "nc", method="ce", seed=0)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", default_root_dir=root, enable_progress_bar=False,
                         enable_model_summary=False,
                         logger=[CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tb")],
                         callbacks=[callback, pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", save_last=True)])
    trainer.fit(Tiny(), _loader(), ckpt_path=ckpt_path)
    return callback.tracker


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eval_pass", "online"])
def test_lightning_callback_logs_and_resumes(tmp_path, mode):
    whole = _fit(tmp_path / "whole", 3, mode=mode)
    assert [r["epoch"] for r in whole.history] == [1, 2, 3] and whole.history[-1]["step"] == 18
    rows = list(csv.DictReader(open(next((tmp_path / "whole" / "csv").rglob("metrics.csv")))))
    assert [float(r["nc/nc1"]) for r in rows if r.get("nc/nc1")] == pytest.approx([r["nc/nc1"] for r in whole.history])
    assert list((tmp_path / "whole" / "tb").rglob("events.out.tfevents.*"))
    run = load_run(tmp_path / "whole" / "nc")
    assert run.summary is not None and len(run.metrics) == 3

    _fit(tmp_path / "cut", 2, mode=mode)
    resumed = _fit(tmp_path / "cut", 3, ckpt_path=tmp_path / "cut" / "ckpt" / "last.ckpt", mode=mode)
    assert [r["step"] for r in resumed.history] == [6, 12, 18]
    for got, want in zip(resumed.history, whole.history):
        assert got["nc/nc1"] == pytest.approx(want["nc/nc1"], rel=1e-6)
    assert [m["epoch"] for m in load_run(tmp_path / "cut" / "nc").metrics] == [1, 2, 3]
