"""Cost of the bounded readers against the unbounded reads they replace, measured in the same run.

* IDX: ``formats.read_idx`` (header first, then a stream capped at the header's size) against
  ``gzip.decompress`` of the whole file followed by ``np.frombuffer`` (the old reader), on the real MNIST
  training images in ``../shared/data`` (or ``--root``). Target: ratio bounded / whole ≤ 1.2.
* npz: the member check of ``open_features`` (every ``.npy`` header against its byte size, then every CRC-32
  and deflate stream read once) against the two measurement passes it protects (``measure_stream``), on a
  synthetic ``--rows`` × ``--dim`` float32 file, stored and deflated. Reported as check / two passes.

Each timing is the best of ``--repeats``; prints one JSON line last.

    python benchmarks/bench_readers.py [--root DIR] [--rows 400000] [--dim 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from ncollapse.data import formats
from ncollapse.data.features import _check_members, open_features
from ncollapse.metrics import measure_stream

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def whole_idx(path: Path) -> np.ndarray:
    """The old reader: decompress everything, then look at the header."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = {}
    images = args.root / "train-images-idx3-ubyte.gz"
    if images.is_file():
        bounded = best(lambda: formats.read_idx(images), args.repeats)
        whole = best(lambda: whole_idx(images), args.repeats)
        assert np.array_equal(formats.read_idx(images), whole_idx(images))
        out["idx"] = {"bounded_s": bounded, "whole_s": whole, "ratio_bounded_over_whole": bounded / whole}
        print(f"IDX {images.name}: bounded {bounded:.3f} s, whole {whole:.3f} s, ratio {bounded / whole:.2f}")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    y = rng.integers(0, 100, args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, save in (("stored", np.savez), ("deflated", np.savez_compressed)):
            path = Path(tmp) / f"{kind}.npz"
            save(path, features=x, labels=y)

            def check():
                with zipfile.ZipFile(path) as zf:
                    _check_members(zf)

            source = open_features(path)
            check_s = best(check, args.repeats)
            passes_s = best(lambda: measure_stream(source.batches, source.num_classes, source.dim), 1)
            out[f"npz_{kind}"] = {"check_s": check_s, "two_passes_s": passes_s, "ratio": check_s / passes_s}
            print(f"npz {kind} ({path.stat().st_size >> 20} MiB): member check {check_s:.2f} s, two passes "
                  f"{passes_s:.2f} s, ratio {check_s / passes_s:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
