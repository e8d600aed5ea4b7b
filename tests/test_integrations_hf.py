"""ncollapse.integrations.hf.NCCallback with tiny models built from configs (never a hub download), offline on the
CPU: sequence classification (BERT) and causal LM (GPT-2, next-token NC at K = vocabulary, padding dropped); the
records reach trainer_state's log history, TensorBoard and the run directory, and resume_from_checkpoint resumes
the tracking: its history equals an uninterrupted run's."""

import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
transformers = pytest.importorskip("transformers", reason="the integrations extra (transformers) is not installed")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (the integrations extra has it)")

from ncollapse.integrations.hf import NCCallback  # noqa: E402
from ncollapse.report.runs import load_run  # noqa: E402

VOCAB, SEQ = 24, 10


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def _classification_rows(n=48):
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        label = i % 3
        ids = torch.randint(3, VOCAB, (SEQ,), generator=g)
        ids[:3] = label  # the class is written in the first tokens
        rows.append({"input_ids": ids, "attention_mask": torch.ones(SEQ, dtype=torch.long),
                     "labels": torch.tensor(label)})
    return Rows(rows)


def _lm_rows(n=48):
    rows = []
    for i in range(n):
        ids = (torch.arange(SEQ) * (1 + i % 3) + i) % VOCAB  # arithmetic sequences: the next token is predictable
        labels = ids.clone()
        labels[-2 - i % 3:] = -100  # padding at the end, ignored
        rows.append({"input_ids": ids, "attention_mask": (labels != -100).long(), "labels": labels})
    return Rows(rows)


def _model(kind):
    torch.manual_seed(0)
    if kind == "classification":
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=SEQ, num_labels=3,
                                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return transformers.BertForSequenceClassification(config)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=16, n_layer=1, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config)


class StopAt(transformers.TrainerCallback):
    """Interrupts the run after ``step`` optimiser steps (a pre-empted job)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _train(out, kind, mode, resume=None, stop=None):
    data = _classification_rows() if kind == "classification" else _lm_rows()
    args = transformers.TrainingArguments(output_dir=str(out), max_steps=6, save_steps=3, per_device_train_batch_size=8,
                                          per_device_eval_batch_size=16, learning_rate=5e-3, report_to=["tensorboard"],
                                          use_cpu=True, seed=0, disable_tqdm=True,
                                          dataloader_num_workers=0)
    trainer = transformers.Trainer(model=_model(kind), args=args, train_dataset=data, eval_dataset=data,
                                   callbacks=[StopAt(stop)] if stop else [])
    loader = trainer.get_eval_dataloader() if mode == "eval_pass" else None
    callback = NCCallback(loader=loader, mode=mode, every_n_steps=2, method=kind, split="test" if loader else "train")
    trainer.add_callback(callback)
    trainer.train(resume_from_checkpoint=resume)
    return callback.tracker, trainer


@pytest.mark.slow
@pytest.mark.parametrize("kind,mode", [("classification", "eval_pass"), ("causal_lm", "eval_pass"),
                                       ("causal_lm", "online")])
def test_hf_callback_measures_logs_and_resumes(tmp_path, kind, mode):
    whole, trainer = _train(tmp_path / "whole", kind, mode)
    assert [r["step"] for r in whole.history] == [2, 4, 6]
    last = whole.history[-1]
    prefix = "nc_test" if mode == "eval_pass" else "nc"  # eval_pass on the trainer's eval set: the test split
    if kind == "causal_lm":
        assert (whole.num_classes, whole.task, whole.classifier_name) == (VOCAB, "next_token", "lm_head")
        next_tokens = sum(int((r["labels"][1:] != -100).sum()) for r in _lm_rows().rows)
        if mode == "eval_pass":
            assert last[f"{prefix}/num_samples"] == next_tokens
        else:  # the window of steps 5-6: 16 training rows, their next tokens without padding
            assert 16 * 4 <= last[f"{prefix}/num_samples"] <= 16 * (SEQ - 3) and f"{prefix}/ncc_mismatch" not in last
    else:
        assert (whole.num_classes, whole.classifier_name) == (3, "classifier")
        assert last[f"{prefix}/num_samples"] == 48 and "test_acc" in last
    logged = [h for h in trainer.state.log_history if f"{prefix}/nc1" in h]
    assert [h["step"] for h in logged] == [2, 4, 6]
    assert [h[f"{prefix}/nc1"] for h in logged] == pytest.approx([r[f"{prefix}/nc1"] for r in whole.history])
    assert list((tmp_path / "whole" / "runs" / "ncollapse").glob("events.out.tfevents.*"))
    run = load_run(tmp_path / "whole" / "nc")
    assert len(run.metrics) == 3 and run.summary is not None

    cut, _ = _train(tmp_path / "cut", kind, mode, stop=3)
    assert [r["step"] for r in cut.history] == [2]
    assert (tmp_path / "cut" / "checkpoint-3" / "nc_tracker_rank0.pt").is_file()
    resumed, _ = _train(tmp_path / "cut", kind, mode, resume=str(tmp_path / "cut" / "checkpoint-3"))
    assert [r["step"] for r in resumed.history] == [2, 4, 6]
    for got, want in zip(resumed.history, whole.history):
        assert got[f"{prefix}/nc1"] == pytest.approx(want[f"{prefix}/nc1"], rel=1e-5)
    assert [m["step"] for m in load_run(tmp_path / "cut" / "nc").metrics] == [2, 4, 6]
