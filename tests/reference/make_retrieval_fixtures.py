"""PyTorch reference for the retrieval metrics (src/retrieval/metrics.c).

Writes tests/fixtures/retrieval.safetensors:
  label.x (N,D) F32, label.y (N) I32        a labelled set: classes of 1 to 27 rows
  label.recall (3) F64                       leave-one-out recall at k = 1, 5, 10
  label.map (1) F64                          leave-one-out mean average precision
  xmodal.a, xmodal.b (M,D) F32               paired rows: b is a noisy copy of a
  xmodal.recall (3) F64                      recall at k = 1, 5, 10 of row i of a finding row i of b
Rows are stored raw; the metrics normalise them (F.normalize here, vr_l2_normalise_rows in C).

label_retrieval and xmodal below are copied verbatim from the audio peer's bench script
(shared/bench/peer_learn.py), whose first outputs are recall@1 and mAP and recall@1; recall at
5 and 10 come from the same lines cut at k. They run in float64 on the stored float32 rows.
Every query's similarities are at least MIN_GAP (2e-6) apart, data being redrawn until they
are, while a float32 cosine of 16-d rows is within a few 1e-7 of the float64 one: a float32
computation ranks them in the same order, and the answers are exact for these inputs.

Run from anywhere with Debian's PyTorch:
  /usr/bin/python3 tests/reference/make_retrieval_fixtures.py
"""
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402  (next to this script)

OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "retrieval.safetensors"))
KS = (1, 5, 10)
MIN_GAP = 2e-6


# ---------------------------------------------------------------- the peer's functions, verbatim
def label_retrieval(f, y):  # leave-one-out inside one set: R@1 and mAP
    a = F.normalize(f, dim=1); sim = a @ a.T; sim.fill_diagonal_(-2)
    order = sim.argsort(dim=1, descending=True)[:, :-1]
    rel = (y[order] == y[:, None]).float()
    hits = rel.cumsum(1); ranks = torch.arange(1, rel.shape[1] + 1).float()
    ap = ((hits / ranks) * rel).sum(1) / rel.sum(1).clamp_min(1)
    return float(rel[:, 0].mean()), float(ap.mean())


def xmodal(ew, es):
    sim = F.normalize(ew, dim=1) @ F.normalize(es, dim=1).T
    return float((sim.argmax(1) == torch.arange(len(ew))).float().mean())


# ---------------------------------------------------------------- the same rankings cut at k
def label_recall(f, y, k):
    a = F.normalize(f, dim=1); sim = a @ a.T; sim.fill_diagonal_(-2)
    order = sim.argsort(dim=1, descending=True)[:, :-1]
    rel = (y[order] == y[:, None]).float()
    return float(rel[:, :k].max(1).values.mean())


def xmodal_recall(ew, es, k):
    sim = F.normalize(ew, dim=1) @ F.normalize(es, dim=1).T
    order = sim.argsort(dim=1, descending=True)
    return float((order[:, :k] == torch.arange(len(ew))[:, None]).any(1).float().mean())


def min_gap(sim):
    """The smallest distance between two similarities of one query."""
    s = sim.sort(dim=1).values
    return float((s[:, 1:] - s[:, :-1]).min())


def labelled_set(g):
    sizes = [1, 1, 1, 2, 3, 5, 8, 12, 20, 27]  # 80 rows, three classes of one row
    d = 16
    centres = torch.randn(len(sizes), d, generator=g, dtype=torch.float64)
    x, y = [], []
    for c, n in enumerate(sizes):
        x.append(centres[c] + 1.2 * torch.randn(n, d, generator=g, dtype=torch.float64))
        y += [c] * n
    perm = torch.randperm(len(y), generator=g)
    return torch.cat(x)[perm].float(), torch.tensor(y)[perm]


def paired_sets(g):
    a = torch.randn(100, 16, generator=g, dtype=torch.float64)
    b = a + 0.9 * torch.randn(100, 16, generator=g, dtype=torch.float64)
    return a.float(), b.float()


def main():
    for seed in range(100):
        g = torch.Generator().manual_seed(seed)
        x, y = labelled_set(g)
        a, b = paired_sets(g)
        x64, a64, b64 = x.double(), a.double(), b.double()
        nx = F.normalize(x64, dim=1)
        gaps = (min_gap(nx @ nx.T), min_gap(F.normalize(a64, dim=1) @ F.normalize(b64, dim=1).T))
        if min(gaps) > MIN_GAP:
            break
    else:
        raise SystemExit("no seed below 100 gives similarities MIN_GAP apart")
    r1, mean_ap = label_retrieval(x64, y)
    recall = [label_recall(x64, y, k) for k in KS]
    assert recall[0] == r1
    xrecall = [xmodal_recall(a64, b64, k) for k in KS]
    assert xrecall[0] == xmodal(a64, b64)
    f64 = torch.float64
    st.write(OUT, {
        "label.x": x.numpy(), "label.y": y.int().numpy(),
        "label.recall": torch.tensor(recall, dtype=f64).numpy(),
        "label.map": torch.tensor([mean_ap], dtype=f64).numpy(),
        "xmodal.a": a.numpy(), "xmodal.b": b.numpy(),
        "xmodal.recall": torch.tensor(xrecall, dtype=f64).numpy(),
    }, {"seed": str(seed), "ks": "1,5,10", "min_gap": f"{min(gaps):.3g}",
        "source": "label_retrieval and xmodal of the audio peer's peer_learn.py, float64"})
    print(f"{OUT}: seed {seed}, min gap {min(gaps):.3g}, label recall {recall} mAP {mean_ap:.6f}, "
          f"cross-modal recall {xrecall}")


if __name__ == "__main__":
    main()
