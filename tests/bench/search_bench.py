"""Brute-force exact search in NumPy and PyTorch, the reference point of search_bench.c: 100,000
random unit vectors of 512 dimensions, inner product, k = 10, batches of 1 and 1,000 queries.

NumPy: one matmul of the batch against the base, argpartition for the k best of each row,
then a sort of those k. PyTorch: torch.mm and torch.topk. Both on float32, with the thread count
given (OpenBLAS and PyTorch threads). Each batch size runs once to warm up, then for about the
time given. Prints a RESULT line of JSON.

  OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 /usr/bin/python3 tests/bench/search_bench.py [threads] [seconds]
"""
import json
import sys
import time

import numpy as np
import torch

N, D, K, MAX_BATCH = 100000, 512, 10, 1000


def unit_rows(rng, n):
    x = rng.standard_normal((n, D), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_search(base, q):
    s = q @ base.T
    part = np.argpartition(-s, K - 1, axis=1)[:, :K]
    best = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1), np.take_along_axis(part, order, axis=1)


def torch_search(base, q):
    return torch.topk(torch.mm(q, base.T), K, dim=1)


def rate(fn, base, q, batch, seconds):
    fn(base, q[:batch])
    done, t0 = 0, time.perf_counter()
    while True:
        at = done * batch % MAX_BATCH
        fn(base, q[at:at + batch])
        done += 1
        t = time.perf_counter() - t0
        if t >= seconds:
            return done * batch / t


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    torch.set_num_threads(threads)
    rng = np.random.default_rng(1)
    base, q = unit_rows(rng, N), unit_rows(rng, MAX_BATCH)
    tb, tq = torch.from_numpy(base), torch.from_numpy(q)
    # the two agree on the answers
    s_np, i_np = numpy_search(base, q[:20])
    s_t, i_t = torch_search(tb, tq[:20])
    assert (i_np == i_t.numpy()).mean() > 0.99, "NumPy and PyTorch disagree"
    r = {"n": N, "d": D, "k": K, "threads": threads}
    for name, fn, b, qq in (("numpy", numpy_search, base, q), ("torch", torch_search, tb, tq)):
        r[f"{name}_qps_batch1"] = round(rate(fn, b, qq, 1, seconds), 2)
        r[f"{name}_qps_batch1000"] = round(rate(fn, b, qq, MAX_BATCH, seconds), 2)
        print(f"{name}: batch of 1 {r[f'{name}_qps_batch1']:.1f} queries/s, "
              f"batch of {MAX_BATCH} {r[f'{name}_qps_batch1000']:.1f} queries/s")
    print("RESULT " + json.dumps(r))


if __name__ == "__main__":
    main()
