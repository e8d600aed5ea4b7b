"""Overhead of ``ncollapse.NCTracker`` on the CPU: a small CNN and a small transformer, ratios in one run.

Cases: ``cnn`` (LeNet-5-sized, K = 10), ``transformer`` (2-layer encoder, d = 64, mean-pooled 10-class head) and,
reported beside them, ``transformer_lm`` (2-layer causal LM, d = 64, next-token NC at K = 256 = vocabulary), where
NC4's nearest-class-centre search costs about as much as the lm_head itself, so the eval pass is also timed
without NC4 (``ncc=False``).

* ``online``: a training step (forward, loss, backward, AdamW step) with the tracker's hook, ``update(labels)`` and
  ``step()`` against the same step of an identical model without a tracker, in pairs, plus the measurement at the
  end of each epoch of the loader spread over its steps (20 steps here; real epochs have more). Target ≤ 1.05.
* ``eval_pass``: ``tracker.measure_now()`` (the pass with ClassStats, NC4 over the cached features, ``measure``)
  against a plain ``torch.no_grad`` eval-mode forward over the same loader. Target ≤ 1.2 (``cnn``, ``transformer``).

Both sides alternate (step by step for online, pass by pass in ABBA order for eval_pass) over ``--repeats``
epochs after a warm-up, and each ratio is a median of paired ratios, so load from other processes falls on both
sides alike. Both the wall-clock and the
process CPU-time ratios are reported; the targets are checked on CPU time (one torch thread: the tracker's own
work, which other processes on a shared machine do not inflate), and the wall ratios are printed beside them.

    python benchmarks/bench_tracking.py [--repeats 9] [--threads 1]

``drift``: the online mode against eval_pass on a real run (an MLP on scikit-learn's digits), per epoch.

Prints a readable summary on stderr and one JSON line last on stdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
from torch import nn

from ncollapse import NCTracker

TARGETS = {"online": 1.05, "eval_pass": 1.2}
TARGETED = ("cnn", "transformer")  # the LM at K = vocabulary is reported beside them (NC4 costs about one lm_head)


class SmallCNN(nn.Module):
    """LeNet-5-sized: 1×28×28 images, 10 classes, 84-dimensional features."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5),
                                  nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 5 * 5, 120), nn.ReLU(),
                                  nn.Linear(120, 84), nn.ReLU())
        self.head = nn.Linear(84, 10)

    def forward(self, x):
        return self.head(self.body(x))


class SmallEncoder(nn.Module):
    """A 2-layer transformer encoder, d = 64, over 32 tokens, mean-pooled into a 10-class linear head."""

    def __init__(self, vocab=256, dim=64, seq=32, classes=10):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, dim), nn.Parameter(torch.zeros(seq, dim))
        layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, tokens):
        return self.head(self.norm(self.blocks(self.embed(tokens) + self.pos).mean(1)))


class SmallLM(nn.Module):
    """A 2-layer causal transformer, d = 64, over a 256-token vocabulary (next-token NC at K = 256)."""

    def __init__(self, vocab=256, dim=64, seq=32):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, dim), nn.Parameter(torch.zeros(seq, dim))
        layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm, self.lm_head = nn.LayerNorm(dim), nn.Linear(dim, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq))

    def forward(self, tokens):
        h = self.blocks(self.embed(tokens) + self.pos, mask=self.mask, is_causal=True)
        return self.lm_head(self.norm(h))


def _cnn_case(batches: int, batch: int):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (batches * batch,), generator=g)
    x = torch.randn(batches * batch, 1, 28, 28, generator=g) + y[:, None, None, None] * 0.1
    loader = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)]
    loss = lambda model, xb, yb: nn.functional.cross_entropy(model(xb), yb)  # noqa: E731
    return "cnn", SmallCNN, 10, loader, loss, {}


def _encoder_case(batches: int, batch: int):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (batches * batch,), generator=g)
    tokens = torch.randint(10, 256, (batches * batch, 32), generator=g)
    tokens[:, :4] = y[:, None]  # the class is written in the first tokens
    loader = [(tokens[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)]
    loss = lambda model, xb, yb: nn.functional.cross_entropy(model(xb), yb)  # noqa: E731
    return "transformer", SmallEncoder, 10, loader, loss, {}


def _lm_case(batches: int, batch: int):
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, 256, (batches * batch, 1), generator=g)
    tokens = (start + torch.arange(32) * (1 + start % 3)) % 256  # learnable next tokens
    loader = [(tokens[i:i + batch], tokens[i:i + batch]) for i in range(0, len(tokens), batch)]

    def loss(model, xb, yb):
        logits = model(xb)[:, :-1]
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb[:, 1:].reshape(-1))

    return "transformer_lm", SmallLM, 256, loader, loss, {"task": "next_token"}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t0: tuple[float, float]) -> tuple[float, float]:
    """(wall, CPU) seconds since ``t0``."""
    wall, cpu = _clock()
    return wall - t0[0], cpu - t0[1]


def _train_step(model, opt, xb, yb, loss_fn, tracker=None) -> tuple[float, float]:
    t0 = _clock()
    loss = loss_fn(model, xb, yb)
    if tracker is not None:
        tracker.update(yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if tracker is not None:
        tracker.step()
    return _since(t0)


def _forward_block(model, loader) -> tuple[float, float]:
    t0 = _clock()
    was = model.training
    model.eval()
    with torch.no_grad():
        for xb, _ in loader:
            model(xb)
    model.train(was)
    return _since(t0)


def _timed(fn) -> tuple[float, float]:
    t0 = _clock()
    fn()
    return _since(t0)


def bench_case(case, repeats: int) -> dict:
    """Online: training steps of the plain and the tracked model in pairs (order alternating), ``repeats`` epochs of
    the loader, each ended by the tracker's measurement; the ratio is the median per-pair step ratio plus the median
    measurement time spread over the epoch's steps. Eval pass: repeats of a plain forward pass, eval_pass with NC4
    and without (``ncc=False``) in ABBA order; medians of the per-repeat ratios."""
    name, make, k, loader, loss_fn, kwargs = case
    torch.manual_seed(0)
    plain = make()
    tracked = copy.deepcopy(plain)
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    opt_tracked = torch.optim.AdamW(tracked.parameters(), lr=1e-3)
    online = NCTracker(tracked, k, mode="online", every_n_epochs=1, **kwargs)
    evaluator = copy.deepcopy(plain)  # the baseline's copy carries no hook
    eval_tracker = NCTracker(copy.deepcopy(plain), k, loader, **kwargs)
    no_ncc = NCTracker(copy.deepcopy(plain), k, loader, ncc=False, **kwargs)
    plain.train()
    tracked.train()
    steps, measures = [], []  # ((plain wall, cpu), (tracked wall, cpu)) per pair; (wall, cpu) per measurement
    for epoch in range(repeats + 1):  # the first epoch warms up allocator, kernels and ClassStats
        for i, (xb, yb) in enumerate(loader):
            sides = [lambda: _train_step(plain, opt_plain, xb, yb, loss_fn),
                     lambda: _train_step(tracked, opt_tracked, xb, yb, loss_fn, online)]
            timed = {j: sides[j]() for j in ((1, 0) if (i + epoch) % 2 else (0, 1))}
            if epoch:
                steps.append((timed[0], timed[1]))
        measured = _timed(online.epoch_end)
        if epoch:
            measures.append(measured)
    passes = {"forward": [], "eval_pass": [], "eval_pass_no_ncc": []}
    runs = {"forward": lambda: _forward_block(evaluator, loader), "eval_pass": lambda: _timed(eval_tracker.measure_now),
            "eval_pass_no_ncc": lambda: _timed(no_ncc.measure_now)}
    for repeat in range(repeats + 1):
        order = list(runs) if repeat % 2 else list(runs)[::-1]  # ABBA: a drift in load falls on both sides
        timed = {key: runs[key]() for key in order}
        if repeat:
            for key, value in timed.items():
                passes[key].append(value)
    for tracker in (online, eval_tracker, no_ncc):
        tracker.close()
    out = {"case": name, "num_classes": k, "batches": len(loader), "batch": len(loader[0][1]),
           "samples_per_pass": eval_tracker.history[-1]["nc/num_samples"],
           "train_step_ms": 1e3 * statistics.median(p[0][0] for p in steps),
           "forward_pass_s": statistics.median(t[0] for t in passes["forward"])}
    for clock, c in (("wall", 0), ("cpu", 1)):
        step = statistics.median(p[0][c] for p in steps)
        share = statistics.median(m[c] for m in measures) / (len(loader) * step)
        out[f"online_{clock}_ratio"] = statistics.median(p[1][c] / p[0][c] for p in steps) + share
        out[f"online_{clock}_measurement_share"] = share
        for key in ("eval_pass", "eval_pass_no_ncc"):
            ratios = [t[c] / b[c] for b, t in zip(passes["forward"], passes[key])]
            out[f"{key}_{clock}_ratio"] = statistics.median(ratios)
            out[f"{key}_{clock}_ratios"] = [round(v, 4) for v in ratios]
    for key in ("online", "eval_pass", "eval_pass_no_ncc"):
        out[f"{key}_ratio"] = out[f"{key}_cpu_ratio"]
    return out


def drift(epochs: int = 12, lr: float = 0.05) -> list[dict]:
    """Online against eval_pass on a real run: an MLP on scikit-learn's digits (bundled, 1,797 8×8 images), SGD
    with momentum, both trackers on the same model every epoch (online: that epoch's training forwards; eval_pass:
    one pass over the training set after the epoch). Returns the per-epoch NC1, CDNV and NC3 of both."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    full = [(x[i:i + 256], y[i:i + 256]) for i in range(0, len(y), 256)]
    online = NCTracker(model, 10, mode="online")
    exact = NCTracker(model, 10, full)
    rows = []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(y), generator=g)
        model.train()
        for i in range(0, len(y), 64):
            xb, yb = x[order[i:i + 64]], y[order[i:i + 64]]
            loss = nn.functional.cross_entropy(model(xb), yb)
            online.update(yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        a, b = online.epoch_end(), exact.epoch_end()
        rows.append({"epoch": epoch, **{f"{key}_{side}": r[f"nc/{key}"] for key in ("nc1", "cdnv", "self_duality")
                                        for side, r in (("online", a), ("eval_pass", b))},
                     "train_eval_acc": b["train_eval_acc"]})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--batches", type=int, default=20, help="batches per block (and per eval pass)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [bench_case(_cnn_case(args.batches, 128), args.repeats),
               bench_case(_encoder_case(args.batches, 32), args.repeats),
               bench_case(_lm_case(args.batches, 32), args.repeats)]
    drift_rows = drift()
    print("online vs eval_pass on digits (MLP, SGD lr 0.05, momentum 0.9), per epoch:", file=sys.stderr)
    for r in drift_rows:
        print(f"  epoch {r['epoch']:2d}: NC1 online {r['nc1_online']:.4f} eval {r['nc1_eval_pass']:.4f} "
              f"({r['nc1_online'] / r['nc1_eval_pass']:.2f}x), "
              f"CDNV {r['cdnv_online']:.4f} / {r['cdnv_eval_pass']:.4f}, "
              f"NC3 {r['self_duality_online']:.4f} / {r['self_duality_eval_pass']:.4f}, "
              f"train acc {r['train_eval_acc']:.4f}", file=sys.stderr)
    ok = True
    for r in results:
        targeted = r["case"] in TARGETED
        for key in TARGETS:
            r[f"{key}_ok"] = r[f"{key}_ratio"] <= TARGETS[key]
            ok = ok and (r[f"{key}_ok"] or not targeted)
        print(f"{r['case']} (K={r['num_classes']}, {r['batches']} batches of {r['batch']}, train step "
              f"{r['train_step_ms']:.1f} ms, forward pass {r['forward_pass_s']:.3f} s), CPU (wall) time ratios: "
              f"online {r['online_ratio']:.3f}x ({r['online_wall_ratio']:.3f}x, target <= {TARGETS['online']}), "
              f"eval_pass {r['eval_pass_ratio']:.3f}x ({r['eval_pass_wall_ratio']:.3f}x, target <= "
              f"{TARGETS['eval_pass']}), without NC4 {r['eval_pass_no_ncc_ratio']:.3f}x "
              f"({r['eval_pass_no_ncc_wall_ratio']:.3f}x)"
              + ("" if targeted else " [K = vocabulary: reported, not a target]"), file=sys.stderr)
    print(json.dumps({"benchmark": "tracking", "threads": args.threads, "repeats": args.repeats, "targets": TARGETS,
                      "targeted_cases": list(TARGETED), "all_ok": ok, "results": results,
                      "drift": drift_rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
