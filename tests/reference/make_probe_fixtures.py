"""PyTorch reference for the linear probe's Adam protocol (src/train/linear_probe.c).

Writes tests/fixtures/probe.safetensors:
  train.x (200,16) F32, train.y (200) I32   a small problem of 5 classes, separable but for a
  test.x (100,16) F32, test.y (100) I32     few rows; features with offsets and scales of their own
  init.w (5,16), init.b (5) F32             the head torch.manual_seed(0); nn.Linear(16, 5) draws
  final.w (5,16), final.b (5) F32           the head after 300 epochs
  top1, top5 (1) F64                        test accuracy of the final head
  loss (1) F64                              the cross entropy of the last step, before its update

The training is the audio peer's linear() (shared/bench/peer_learn.py): standardise with the
training mean and std + 1e-6, full-batch Adam (lr 1e-2, weight decay 1e-4), 300 epochs of
cross entropy. It is copied below verbatim, and `trained` repeats its lines in float64 on the
stored float32 inputs from the same initial head, keeping the head. Both must agree on the test
accuracy. Every test row's two best logits are at least MIN_MARGIN apart under the final head
(data are redrawn until they are), so a float32 run cannot flip a prediction.

Run from anywhere with Debian's PyTorch:
  /usr/bin/python3 tests/reference/make_probe_fixtures.py
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402  (next to this script)

OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "probe.safetensors"))
NTRAIN, NTEST, D, C = 200, 100, 16, 5
MIN_MARGIN = 1e-2


# ---------------------------------------------------------------- the peer's function, verbatim
def linear(ftr, ytr, fte, yte, epochs=300):
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    a, b = (ftr - mu) / sd, (fte - mu) / sd
    torch.manual_seed(0)
    head = nn.Linear(a.shape[1], int(ytr.max()) + 1)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad(); F.cross_entropy(head(a), ytr).backward(); opt.step()
    with torch.no_grad():
        return float((head(b).argmax(1) == yte).float().mean())


# ---------------------------------------------------------------- the same in float64, keeping the head
def trained(ftr, ytr, fte, w0, b0, epochs=300):
    ftr, fte = ftr.double(), fte.double()
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    a, b = (ftr - mu) / sd, (fte - mu) / sd
    head = nn.Linear(a.shape[1], w0.shape[0]).double()
    with torch.no_grad():
        head.weight.copy_(w0); head.bias.copy_(b0)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad(); loss = F.cross_entropy(head(a), ytr); loss.backward(); opt.step()
    with torch.no_grad():
        return head.weight.clone(), head.bias.clone(), head(b), float(loss)


def problem(g):
    """Class centres 2.2 apart on average in 16-d, unit noise, then an offset and scale per feature."""
    centres = 1.1 * torch.randn(C, D, generator=g)
    offset = 4.0 * torch.rand(D, generator=g) - 2.0
    scale = 0.5 + 2.5 * torch.rand(D, generator=g)

    def draw(n):
        y = torch.arange(n) % C
        y = y[torch.randperm(n, generator=g)]
        return (centres[y] + torch.randn(n, D, generator=g)) * scale + offset, y

    (xtr, ytr), (xte, yte) = draw(NTRAIN), draw(NTEST)
    return xtr.float(), ytr, xte.float(), yte


def main():
    torch.manual_seed(0)
    init = nn.Linear(D, C)  # the draws of the peer's linear()
    w0, b0 = init.weight.detach().clone(), init.bias.detach().clone()
    for seed in range(100):
        xtr, ytr, xte, yte = problem(torch.Generator().manual_seed(seed))
        w, b, logits, loss = trained(xtr, ytr, xte, w0.double(), b0.double())
        best2 = logits.topk(2, dim=1).values
        margin = float((best2[:, 0] - best2[:, 1]).min())
        if margin > MIN_MARGIN:
            break
    else:
        raise SystemExit("no seed below 100 gives test margins above MIN_MARGIN")
    rank = (logits > logits.gather(1, yte[:, None])).sum(1)
    top1, top5 = float((rank == 0).double().mean()), float((rank < 5).double().mean())
    peer = linear(xtr, ytr, xte, yte)
    assert abs(peer - top1) < 1e-6, (peer, top1)
    f64 = torch.float64
    st.write(OUT, {
        "train.x": xtr.numpy(), "train.y": ytr.int().numpy(),
        "test.x": xte.numpy(), "test.y": yte.int().numpy(),
        "init.w": w0.numpy(), "init.b": b0.numpy(),
        "final.w": w.float().numpy(), "final.b": b.float().numpy(),
        "top1": torch.tensor([top1], dtype=f64).numpy(),
        "top5": torch.tensor([top5], dtype=f64).numpy(),
        "loss": torch.tensor([loss], dtype=f64).numpy(),
    }, {"seed": str(seed), "epochs": "300", "lr": "1e-2", "weight_decay": "1e-4",
        "min_margin": f"{margin:.3g}",
        "source": "linear() of the audio peer's peer_learn.py, float64, head kept"})
    print(f"{OUT}: seed {seed}, test top-1 {top1} (peer's float32 run {peer}), top-5 {top5}, "
          f"final loss {loss:.6f}, smallest test margin {margin:.3g}, max |w| {float(w.abs().max()):.3f}")


if __name__ == "__main__":
    main()
