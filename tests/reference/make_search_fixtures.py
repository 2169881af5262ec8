"""NumPy brute-force reference for exact search (src/retrieval/search.c).

Writes tests/fixtures/search.safetensors:
  float.base (2000, 64) F32, float.queries (50, 64) F32
      Gaussian rows of norms 0.5 to 1.5 (so that inner product and L2 rank differently)
  float.{ip,l2}.ids (50, 10) I64, float.{ip,l2}.scores (50, 10) F64
      the top 10 of each query by inner product (highest first) and by squared L2 distance
      (lowest first), from float64 arithmetic on the stored float32 values; L2 as the sum of
      squared differences, not the expansion the C code uses
  ties.base (400, 16) F32, ties.queries (30, 16) F32
      values k/4 with k in -4..4, so every product and sum is exact in float32 whatever the
      order of operations; 60 base rows are copies of others, 10 queries copies of base rows:
      many exact ties, which rank the lower id first
  ties.{ip,l2}.ids, ties.{ip,l2}.scores (30, 10)   the same references

Float queries are kept only when, for both metrics, the 11 best scores are at least MIN_GAP
(1e-5) apart, while float32 arithmetic on these rows is within about 1e-6 of float64: the top
10 is then the same set in the same order in any correct float32 computation.

Run from anywhere with Debian's NumPy:
  /usr/bin/python3 tests/reference/make_search_fixtures.py
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402  (next to this script)

OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "search.safetensors"))
K = 10
MIN_GAP = 1e-5


def scores(q, b, metric):
    """(nq, n) float64 scores: inner products, or squared distances summed term by term."""
    q, b = q.astype(np.float64), b.astype(np.float64)
    if metric == "ip":
        return q @ b.T
    return ((q[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)


def top(s, metric, k):
    """Best k ids per row: by score (high first for ip, low first for l2), then by lower id."""
    ids = np.arange(s.shape[1])
    key = -s if metric == "ip" else s
    order = np.stack([np.lexsort((ids, key[i]))[:k] for i in range(s.shape[0])])
    return order, np.take_along_axis(s, order, axis=1)


def float_set(rng):
    n, d = 2000, 64
    base = rng.standard_normal((n, d)) / np.sqrt(d) * rng.uniform(0.5, 1.5, (n, 1))
    queries = []
    while len(queries) < 50:
        q = (rng.standard_normal(d) / np.sqrt(d) * rng.uniform(0.5, 1.5)).astype(np.float32)
        ok = True
        for metric in ("ip", "l2"):
            _, best = top(scores(q[None], base.astype(np.float32), metric), metric, K + 1)
            ok = ok and np.diff(np.sort(best[0])).min() >= MIN_GAP
        if ok:
            queries.append(q)
    return base.astype(np.float32), np.stack(queries)


def tie_set(rng):
    n, d = 400, 16
    base = rng.integers(-4, 5, (n, d)).astype(np.float32) / 4
    copies = rng.choice(n, 60, replace=False)
    base[copies[:30]] = base[copies[30:]]  # 30 rows equal to 30 others
    base[rng.choice(n, 30, replace=False)] = base[0]  # 30 more equal to row 0
    queries = rng.integers(-4, 5, (30, d)).astype(np.float32) / 4
    queries[:10] = base[rng.choice(n, 10, replace=False)]
    return base, queries


def main():
    rng = np.random.default_rng(20240604)
    tensors = {}
    for name, (base, queries) in (("float", float_set(rng)), ("ties", tie_set(rng))):
        tensors[f"{name}.base"] = base
        tensors[f"{name}.queries"] = queries
        for metric in ("ip", "l2"):
            ids, best = top(scores(queries, base, metric), metric, K)
            tensors[f"{name}.{metric}.ids"] = ids.astype(np.int64)
            tensors[f"{name}.{metric}.scores"] = best
    ties = sum(int((np.diff(tensors[f"ties.{m}.scores"], axis=1) == 0).sum()) for m in ("ip", "l2"))
    st.write(OUT, tensors, {"k": str(K), "min_gap": str(MIN_GAP), "source": "numpy float64 brute force"})
    print(f"{OUT}: {os.path.getsize(OUT)} bytes; {ties} tied neighbours inside the ties set's top {K}")


if __name__ == "__main__":
    main()
