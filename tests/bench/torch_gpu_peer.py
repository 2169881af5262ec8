#!/usr/bin/env python3
"""The PyTorch peer on the GPU: ResNet-50 VICReg training steps, for tests/bench/gpu_bench.sh.

The same step as `bench_step gpu` (tests/bench/bench_step.c) and as the CPU peer of
shared/bench/torch_peer.py config b: ResNet-50 backbone (torchvision topology, no fc), expander
2048-8192-8192-8192 (Linear-BN-ReLU, last Linear without bias), two 224x224 views passed
separately (batch norm statistics per view, as the reference code), VICReg loss (25, 25, 1) in
float32, SGD momentum 0.9, weight decay 1e-6 on every tensor, lr 1e-3. One random batch is made
on the GPU and reused, so the timing is the step alone.

Precisions, as the toolkit's backends:
  fp32  cuDNN and cuBLAS without TF32 (torch.backends.*.allow_tf32 = False)   ~ cuda
  tf32  TF32 allowed in convolutions and matrix products                      ~ cuda-tf32
  bf16  autocast to bfloat16 (channels_last), float32 master weights and loss ~ cuda-bf16

Prints one RESULT line of JSON: pairs/s (images/s: each image gives two views), the median
step, the device memory the run took as bench_step gpu measures it (torch.cuda.mem_get_info
after the steps against before the model, once the CUDA context exists), and the allocator's
peaks (max_memory_reserved, max_memory_allocated). Each timed step is an NVTX range "step",
which a profiler can select (gpu_bench.sh PROFILE).

usage: python3 torch_gpu_peer.py --precision fp32|tf32|bf16 [--batch 64] [--warmup 5] [--steps 20]
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def vicreg_loss(x, y, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    """facebookresearch/vicreg main_vicreg.py, the covariance over the real batch size."""
    n, d = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (n - 1)
    cov_y = (y.T @ y) / (n - 1)
    off = ~torch.eye(d, dtype=torch.bool, device=x.device)
    cov_loss = cov_x[off].pow(2).sum().div(d) + cov_y[off].pow(2).sum().div(d)
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


def projector(spec):
    f = list(map(int, spec.split("-")))
    layers = []
    for i in range(len(f) - 2):
        layers += [nn.Linear(f[i], f[i + 1]), nn.BatchNorm1d(f[i + 1]), nn.ReLU(True)]
    layers.append(nn.Linear(f[-2], f[-1], bias=False))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3), for machines without torchvision."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        h = F.relu(self.bn2(self.conv2(h)), inplace=True)
        return F.relu(self.bn3(self.conv3(h)) + idt, inplace=True)


class ResNet50(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            stage = []
            for j in range(blocks):
                stage.append(Bottleneck(cin, planes, 2 if j == 0 and i > 0 else 1))
                cin = planes * 4
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def backbone():
    try:
        import torchvision
        m = torchvision.models.resnet50(weights=None)
        m.fc = nn.Identity()
        return m, "torchvision"
    except Exception:  # absent, or built for another torch
        return ResNet50(), "own definition (no usable torchvision)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"), required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("torch_gpu_peer: torch sees no CUDA device")
    dev = torch.device("cuda")
    torch.cuda.init()
    free0 = torch.cuda.mem_get_info()[0]
    tf32 = a.precision == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True  # as the toolkit: the fastest algorithm per shape
    torch.manual_seed(0)
    net, source = backbone()
    model = nn.ModuleDict({"backbone": net, "projector": projector("2048-8192-8192-8192")}).to(dev)
    fmt = torch.channels_last if a.precision == "bf16" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-6)
    n = a.batch
    x = torch.randn(n, 3, 224, 224, device=dev).contiguous(memory_format=fmt)
    y = torch.randn(n, 3, 224, 224, device=dev).contiguous(memory_format=fmt)
    torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for it in range(a.warmup + a.steps):
        # a start/end range, not push/pop: autograd runs the backward on a thread of its own
        rng = torch.cuda.nvtx.range_start("step") if it >= a.warmup else None
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            zx = model["projector"](model["backbone"](x))
            zy = model["projector"](model["backbone"](y))
        loss = vicreg_loss(zx.float(), zy.float())
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if rng is not None:
            torch.cuda.nvtx.range_end(rng)
        losses.append(float(loss))
        if it >= a.warmup:
            times.append(dt)
    free1 = torch.cuda.mem_get_info()[0]
    med = statistics.median(times)
    res = dict(config=f"gpu_resnet50_224px_b{n}_{a.precision}", side="torch", backbone=source,
               torch=torch.__version__, cudnn=torch.backends.cudnn.version(),
               gpu=torch.cuda.get_device_name(0), batch_pairs=n, median_step_s=round(med, 5),
               min_step_s=round(min(times), 5), max_step_s=round(max(times), 5),
               pairs_per_s=round(n / med, 2), views_per_s=round(2 * n / med, 2),
               peak_mem_MB=round((free0 - free1) / 2**20, 1),
               peak_reserved_MB=round(torch.cuda.max_memory_reserved() / 2**20, 1),
               peak_allocated_MB=round(torch.cuda.max_memory_allocated() / 2**20, 1),
               loss_first=round(losses[0], 4), loss_last=round(losses[-1], 4),
               warmup=a.warmup, steps=a.steps)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
