"""Language-model throughput and the cost of NC at vocabulary size (issue 21), as ratios measured in one process.

1. Trainer vs a plain loop: ``ncollapse.train.train`` with ``train.task = "lm"`` against a plain PyTorch loop
   (the same GPT, AdamW, gradient clipping, batches of random windows of the same tokens) for the same number
   of steps, alternated ``--repeats`` times; each side's best tokens/s in wall time (the trainer's own
   ``train_tokens_per_s``, which leaves out start-up and evaluation) and per CPU second (see ``throughput``).
   Target: trainer / plain >= 0.9.
2. NC pass vs forward: ``lm_eval.nc_pass`` + ``lm_nc_report`` (ClassStats, NCCCounts at K = vocabulary, the
   finalised metrics) over ``--nc-tokens`` tokens at K = 32,768, d = 256 against the no-grad forward pass over the
   same windows that produces the features (timed before and after the pass, the faster kept). Target:
   (NC pass − its forward) / forward <= 1.5, i.e. measuring costs at most 1.5 forward passes, in wall and in CPU
   seconds (one thread: CPU seconds are steadier on a loaded machine); the pass including its forward is printed too.
3. Peak RSS of the process (VmHWM). Target: <= 4 GB.

    python benchmarks/bench_lm.py                        # 1M tokens for the NC pass (slow on a loaded CPU)
    python benchmarks/bench_lm.py --nc-tokens 131072     # quicker; the NC ratio does not depend on N

Text: ../shared/data/text at vocabulary 8192 (tokenised once into the cache); the NC comparison uses random tokens.
Prints a readable summary on stderr and one JSON line last on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ncollapse.data.text import TokenSampler, load_corpus  # noqa: E402
from ncollapse.nn.gpt import GPT, GPTConfig  # noqa: E402
from ncollapse.train import load_config, train  # noqa: E402
from ncollapse.train.dist import DistContext  # noqa: E402
from ncollapse.train.lm_eval import lm_nc_report, nc_pass, window_starts, windows  # noqa: E402

TEXT = ROOT.parent / "shared" / "data" / "text"


def peak_rss_gb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def trainer_config(args, text: list[str], steps: int):
    tokens = steps * args.batch * args.context
    return load_config(None, [
        'train.task="lm"', f"train.batch_size={args.batch}", f"train.threads={args.threads}", 'optim.name="adamw"',
        "optim.lr=0.003", "optim.betas=[0.9, 0.95]", "optim.weight_decay=0.1", 'schedule.name="cosine"',
        f"lm.text={json.dumps(text)}", f"lm.vocab_size={args.vocab}", f"lm.context={args.context}",
        f"lm.layers={args.layers}", f"lm.width={args.width}", f"lm.heads={args.heads}", f"lm.tokens={tokens}",
        f"lm.eval_every={tokens}", "lm.warmup_tokens=0", f"lm.val_tokens={args.context}",
        "lm.nc_tokens=8192", "eval.batch_size=4096"])


def plain_loop(args, tokens: np.ndarray, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds of a plain loop: sampler, forward, cross-entropy, backward, clip, AdamW step."""
    model = GPT(GPTConfig(args.vocab, args.context, args.layers, args.width, args.heads), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.003, betas=(0.9, 0.95), weight_decay=0.1)
    sampler = TokenSampler(tokens, args.batch, args.context, seed=0)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        x, y = sampler.next()
        _, logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def trainer_run(args, text: list[str], steps: int, out: Path) -> tuple[float, float]:
    """(the trainer's own training tokens/s, CPU seconds of the whole ``train`` call)."""
    cpu = time.process_time()
    train(trainer_config(args, text, steps), out, device="cpu")
    cpu = time.process_time() - cpu
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["train_tokens_per_s"], cpu


def throughput(args) -> dict:
    """Best of ``repeats``: wall tokens/s (the trainer's own count against the plain loop's), and CPU tokens/s,
    the trainer's from two runs of ``short`` and ``short + steps`` steps (start-up and the end's evaluation are
    the same in both and cancel)."""
    if not TEXT.is_dir():
        raise SystemExit(f"bench_lm.py: the throughput comparison needs the text at {TEXT} (or --skip-throughput)")
    text, short = [str(TEXT)], 4
    per_run = args.steps * args.batch * args.context
    with tempfile.TemporaryDirectory() as tmp:
        corpus = load_corpus(text, args.vocab, 0.05)
        trainer_run(args, text, short, Path(tmp) / "warm-up")  # one-time costs (lazy imports, first allocations)
        best = {"trainer": 0.0, "plain": 0.0, "trainer_cpu": 0.0, "plain_cpu": 0.0}
        for i in range(args.repeats):
            wall_rate, cpu_long = trainer_run(args, text, short + args.steps, Path(tmp) / f"long{i}")
            _, cpu_short = trainer_run(args, text, short, Path(tmp) / f"short{i}")
            plain_wall, plain_cpu = plain_loop(args, corpus.train, args.steps)
            rates = {"trainer": wall_rate, "plain": per_run / plain_wall,
                     "trainer_cpu": per_run / max(cpu_long - cpu_short, 1e-9), "plain_cpu": per_run / plain_cpu}
            best = {k: max(best[k], v) for k, v in rates.items()}
            print(f"  repeat {i + 1}: " + ", ".join(f"{k} {v:.0f} tok/s" for k, v in rates.items()), file=sys.stderr,
                  flush=True)
    return {"trainer_tokens_per_s": round(best["trainer"], 1), "plain_tokens_per_s": round(best["plain"], 1),
            "trainer_over_plain": round(best["trainer"] / best["plain"], 3),
            "trainer_cpu_tokens_per_s": round(best["trainer_cpu"], 1),
            "plain_cpu_tokens_per_s": round(best["plain_cpu"], 1),
            "trainer_over_plain_cpu": round(best["trainer_cpu"] / best["plain_cpu"], 3)}


def nc_cost(args) -> dict:
    ctx = DistContext(0, 1, torch.device("cpu"))
    model = GPT(GPTConfig(args.nc_vocab, args.context, args.layers_nc, args.nc_width, args.heads), seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, args.nc_vocab, (args.nc_tokens + args.context + 1,), generator=gen, dtype=torch.int32)
    rows = windows(tokens, window_starts(len(tokens), args.context, args.nc_tokens, spread=False), args.context, ctx)
    batch = max(1, args.eval_tokens // args.context)
    counts = np.bincount(tokens.numpy(), minlength=args.nc_vocab)

    def timed(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn()
        return value, time.perf_counter() - wall, time.process_time() - cpu

    def forward():
        with torch.no_grad():
            for i in range(0, rows.shape[0], batch):
                model(rows[i:i + batch, :-1])

    _, fwd_wall, fwd_cpu = timed(forward)
    result, acc_wall, acc_cpu = timed(lambda: nc_pass(model, rows, ctx, batch, args.min_count))
    report, fin_wall, fin_cpu = timed(lambda: lm_nc_report(result, counts, (10_000, 1_000), args.min_count, "nc"))
    if not args.single_forward:  # the forward before and after the pass: the faster of the two
        _, again_wall, again_cpu = timed(forward)
        fwd_wall, fwd_cpu = min(fwd_wall, again_wall), min(fwd_cpu, again_cpu)
    pass_wall, pass_cpu = acc_wall + fin_wall, acc_cpu + fin_cpu
    return {"nc_tokens": rows.numel() - rows.shape[0], "vocab": args.nc_vocab, "dim": args.nc_width,
            "forward_s": round(fwd_wall, 2), "forward_cpu_s": round(fwd_cpu, 2), "nc_pass_s": round(pass_wall, 2),
            "nc_pass_cpu_s": round(pass_cpu, 2), "nc_finalise_s": round(fin_wall, 2),
            "measuring_over_forward": round((pass_wall - fwd_wall) / fwd_wall, 3),
            "measuring_over_forward_cpu": round((pass_cpu - fwd_cpu) / fwd_cpu, 3),
            "pass_over_forward": round(pass_wall / fwd_wall, 3), "measured_classes": report["nc/num_measured_classes"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nc-tokens", type=int, default=1 << 20)
    p.add_argument("--nc-vocab", type=int, default=32768)
    p.add_argument("--nc-width", type=int, default=256)
    p.add_argument("--layers-nc", type=int, default=4)
    p.add_argument("--eval-tokens", type=int, default=4096, help="tokens per forward batch of the NC comparison")
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--single-forward", action="store_true", help="time the forward once, before the NC pass")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = {"threads": args.threads, "torch": torch.__version__}
    if not args.skip_throughput:
        out.update(throughput(args))
        print(f"trainer {out['trainer_tokens_per_s']:.0f} tok/s vs plain loop {out['plain_tokens_per_s']:.0f}: "
              f"{out['trainer_over_plain']:.3f}; per CPU second {out['trainer_cpu_tokens_per_s']:.0f} vs "
              f"{out['plain_cpu_tokens_per_s']:.0f}: {out['trainer_over_plain_cpu']:.3f} (target >= 0.9)", file=sys.stderr)
    out.update(nc_cost(args))
    out["peak_rss_gb"] = round(peak_rss_gb(), 3)
    print(f"NC pass over {out['nc_tokens']} tokens at K = {out['vocab']}, d = {out['dim']}: {out['nc_pass_s']} s "
          f"(finalise {out['nc_finalise_s']} s) vs forward {out['forward_s']} s: measuring / forward "
          f"{out['measuring_over_forward']:.3f} (CPU time {out['measuring_over_forward_cpu']:.3f}; target <= 1.5), pass incl. its forward / forward "
          f"{out['pass_over_forward']:.3f}; peak RSS {out['peak_rss_gb']:.2f} GB (target <= 4)", file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
