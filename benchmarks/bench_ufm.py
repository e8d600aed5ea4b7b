"""Batched UFM sweep vs a Python loop over the same instances (issue 4, item 7).

32 instances per loss (MSE and CE; K = 10, n = 50, d = 64; λ_H and seeds vary), 2,000 full-batch GD steps,
no early stop and no metric logging in either arm, float64 unless --dtype float32. The batched arm is one
``ufm.solve`` call on the stacked problem; the loop arm calls ``ufm.solve`` once per instance. Both must reach
the same objective (checked; the run fails otherwise).
The last stdout line is one JSON object with ``speedup_vs_loop`` (total loop time / total batched time).

    python benchmarks/bench_ufm.py [--steps 2000] [--instances 32] [--device cpu] [--threads N] [--dtype float64]
"""

import argparse
import json
import time

import numpy as np
import torch

from ncollapse.ufm import UFMProblem, solve


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lambdas = np.logspace(-4, -2, args.instances)
    rows, batched_total, loop_total = {}, 0.0, 0.0
    for loss in ("mse", "ce"):
        problems = [UFMProblem.balanced(10, 50, 64, loss=loss, lambda_h=float(lam), seed=i)
                    for i, lam in enumerate(lambdas)]
        run = lambda ps: solve(ps, optimizer="gd", lr=0.5, steps=args.steps, tol=0.0,  # noqa: E731
                               record_metrics=False, device=args.device, dtype=getattr(torch, args.dtype))
        batched, t_batched = _timed(lambda: run(problems))
        singles, t_loop = _timed(lambda: [run(p) for p in problems])
        loop_obj = np.array([r.objective[0] for r in singles])
        max_rel = float(np.max(np.abs(batched.objective - loop_obj) / np.abs(loop_obj)))
        if max_rel > 1e-4:
            raise SystemExit(f"{loss}: batched and looped objectives disagree (max rel. diff {max_rel:.1e})")
        rows[loss] = {"batched_s": round(t_batched, 3), "loop_s": round(t_loop, 3),
                      "speedup": round(t_loop / t_batched, 2), "max_rel_objective_diff": max_rel}
        batched_total += t_batched
        loop_total += t_loop
        print(f"{loss}: batched {t_batched:.2f}s, loop {t_loop:.2f}s, speedup {t_loop / t_batched:.1f}x, "
              f"objective agreement {max_rel:.1e}")
    print(json.dumps({"benchmark": "ufm_batched_sweep", "instances": args.instances, "steps": args.steps,
                      "shape": {"classes": 10, "per_class": 50, "dim": 64}, "device": args.device,
                      "dtype": args.dtype, "torch_threads": torch.get_num_threads(), "per_loss": rows,
                      "batched_s": round(batched_total, 3), "loop_s": round(loop_total, 3),
                      "speedup_vs_loop": round(loop_total / batched_total, 2)}))


if __name__ == "__main__":
    main()
