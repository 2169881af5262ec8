"""PyTorch reference fixtures for the C test-suite.

Writes into tests/fixtures/ (next to this folder):
  conv.safetensors        1-D and 2-D convolutions: x, w, b, y and every gradient
  pool.safetensors        max pooling (1-D, 2-D) and global average pooling
  batchnorm.safetensors   batch norm in training and evaluation mode, residual and ReLU fusions
  linear.safetensors      fully connected layers
  elementwise.safetensors ReLU
  vicreg.safetensors      VICReg loss terms and gradients
  optim.safetensors       three steps of LARS, SGD and AdamW
  model_r18_2d.safetensors, model_r18_1d.safetensors, model_r50_2d.safetensors
                          ResNet backbones: representation and every gradient
  train_step.safetensors  one VICReg training step (backbone, expander, loss, LARS)

Every random input is drawn in float32 (seeded per case from its name) and stored as it is; the
reference is computed from it in float64 and stored rounded to float32, so the fixtures carry
the exact answer for the stored inputs and the C tolerances measure the C code alone.
Every case stores a random upstream gradient (dy) and the gradients autograd derives from it.

Run from anywhere with Debian's PyTorch:
  /usr/bin/python3 tests/reference/make_fixtures.py
"""
import json
import math
import os
import sys
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402  (next to this script)

OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
BN_MOMENTUM, BN_EPS = 0.1, 1e-5


# ---------------------------------------------------------------- helpers
def seed(name):
    """Seeds torch from a case name, so each case's data does not depend on the others."""
    torch.manual_seed(zlib.crc32(name.encode()))


def leaf(t):
    """A float64 copy of a float32 input that records its gradient."""
    return t.detach().double().requires_grad_(True)


class Fixture:
    """Tensors and string metadata of one safetensors file, in insertion order."""

    def __init__(self, filename):
        self.path = os.path.join(OUT, filename)
        self.tensors, self.metadata = {}, {}

    def add(self, name, t, dtype=None):
        """Stores a tensor: floating point as float32, integers as int64 unless dtype says."""
        if name in self.tensors:
            raise KeyError(name)
        t = t.detach()
        if dtype is None:
            dtype = torch.float32 if t.is_floating_point() else torch.int64
        # a copy: the tensor may change in place later (running statistics, optimiser steps)
        self.tensors[name] = t.to(dtype, copy=True).contiguous().numpy()

    def meta(self, key, value):
        """Stores metadata; anything but a string is stored as JSON."""
        self.metadata[key] = value if isinstance(value, str) else json.dumps(value)

    def save(self):
        st.write(self.path, self.tensors, self.metadata)


# ---------------------------------------------------------------- convolution
CONV_CASES = [
    dict(rank=2, n=2, cin=3, cout=4, **{"in": [8, 8]}, k=[3, 3], stride=[1, 1], pad=[1, 1], bias=True),
    dict(rank=2, n=2, cin=4, cout=5, **{"in": [7, 9]}, k=[3, 3], stride=[2, 2], pad=[1, 1], bias=False),
    dict(rank=2, n=2, cin=3, cout=4, **{"in": [15, 16]}, k=[7, 7], stride=[2, 2], pad=[3, 3], bias=False),
    dict(rank=2, n=2, cin=6, cout=8, **{"in": [7, 8]}, k=[1, 1], stride=[2, 2], pad=[0, 0], bias=False),
    dict(rank=2, n=2, cin=5, cout=7, **{"in": [6, 5]}, k=[1, 1], stride=[1, 1], pad=[0, 0], bias=True),
    dict(rank=2, n=2, cin=3, cout=4, **{"in": [9, 8]}, k=[3, 5], stride=[2, 1], pad=[1, 2], bias=True),
    dict(rank=2, n=1, cin=4, cout=3, **{"in": [5, 6]}, k=[3, 3], stride=[1, 1], pad=[1, 1], bias=True),
    dict(rank=1, n=2, cin=1, cout=4, **{"in": [400]}, k=[80], stride=[4], pad=[38], bias=False),
    dict(rank=1, n=2, cin=4, cout=6, **{"in": [33]}, k=[3], stride=[2], pad=[1], bias=True),
    dict(rank=1, n=2, cin=6, cout=8, **{"in": [17]}, k=[1], stride=[2], pad=[0], bias=False),
]


def make_conv():
    fx = Fixture("conv.safetensors")
    fx.meta("count", str(len(CONV_CASES)))
    for i, c in enumerate(CONV_CASES):
        name = f"conv{i}"
        seed(name)
        fan_in = c["cin"] * math.prod(c["k"])
        x = torch.randn(c["n"], c["cin"], *c["in"])
        w = torch.randn(c["cout"], c["cin"], *c["k"]) / math.sqrt(fan_in)
        b = torch.randn(c["cout"]) if c["bias"] else None
        conv = F.conv2d if c["rank"] == 2 else F.conv1d
        xd, wd = leaf(x), leaf(w)
        bd = leaf(b) if c["bias"] else None
        y = conv(xd, wd, bd, stride=c["stride"], padding=c["pad"])
        dy = torch.randn(y.shape)
        y.backward(dy.double())
        fx.meta(name, c)
        fx.add(f"{name}.x", x)
        fx.add(f"{name}.w", w)
        if c["bias"]:
            fx.add(f"{name}.b", b)
        fx.add(f"{name}.y", y)
        fx.add(f"{name}.dy", dy)
        fx.add(f"{name}.dx", xd.grad)
        fx.add(f"{name}.dw", wd.grad)
        if c["bias"]:
            fx.add(f"{name}.db", bd.grad)
    fx.save()


# ---------------------------------------------------------------- pooling
MAXPOOL_CASES = [
    dict(rank=2, n=2, c=3, **{"in": [9, 7]}, k=[3, 3], stride=[2, 2], pad=[1, 1]),
    dict(rank=2, n=2, c=3, **{"in": [8, 6]}, k=[2, 2], stride=[2, 2], pad=[0, 0]),
    dict(rank=1, n=2, c=3, **{"in": [30]}, k=[4], stride=[4], pad=[0]),
    dict(rank=1, n=2, c=3, **{"in": [33]}, k=[3], stride=[2], pad=[1]),
]
AVGPOOL_CASES = [dict(n=2, c=3, s=12), dict(n=3, c=5, s=49), dict(n=2, c=4, s=1)]


def distinct_values(*shape):
    """Values spread over (-2, 2) in random order, all different, so the max has no ties."""
    count = math.prod(shape)
    return ((torch.randperm(count).float() + 0.5) * (4.0 / count) - 2.0).reshape(shape)


def make_pool():
    fx = Fixture("pool.safetensors")
    fx.meta("maxpool_count", str(len(MAXPOOL_CASES)))
    fx.meta("avgpool_count", str(len(AVGPOOL_CASES)))
    for i, c in enumerate(MAXPOOL_CASES):
        name = f"maxpool{i}"
        seed(name)
        x = distinct_values(c["n"], c["c"], *c["in"])
        pool = F.max_pool2d if c["rank"] == 2 else F.max_pool1d
        xd = leaf(x)
        y, argmax = pool(xd, c["k"], c["stride"], c["pad"], return_indices=True)
        dy = torch.randn(y.shape)
        y.backward(dy.double())
        fx.meta(name, c)
        fx.add(f"{name}.x", x)
        fx.add(f"{name}.y", y)
        fx.add(f"{name}.argmax", argmax, torch.int32)
        fx.add(f"{name}.dy", dy)
        fx.add(f"{name}.dx", xd.grad)
    for i, c in enumerate(AVGPOOL_CASES):
        name = f"avgpool{i}"
        seed(name)
        x = torch.randn(c["n"], c["c"], c["s"])
        xd = leaf(x)
        y = xd.mean(dim=2)
        dy = torch.randn(y.shape)
        y.backward(dy.double())
        fx.meta(name, c)
        fx.add(f"{name}.x", x)
        fx.add(f"{name}.y", y)
        fx.add(f"{name}.dy", dy)
        fx.add(f"{name}.dx", xd.grad)
    fx.save()


# ---------------------------------------------------------------- batch norm
# "shape" is the shape PyTorch sees; the fixture stores every (N,C,...) tensor as (N,C,S).
BN_CASES = [
    dict(module="BatchNorm2d", shape=[4, 5, 7, 6], relu=0, residual=0),
    dict(module="BatchNorm2d", shape=[4, 5, 7, 6], relu=1, residual=0),
    dict(module="BatchNorm2d", shape=[4, 5, 7, 6], relu=1, residual=1),
    dict(module="BatchNorm1d", shape=[8, 6], relu=1, residual=0),
    dict(module="BatchNorm1d", shape=[2, 3], relu=0, residual=0),
    dict(module="BatchNorm1d", shape=[3, 4, 33], relu=1, residual=1),
    dict(module="BatchNorm1d", shape=[3, 4, 33], relu=0, residual=1),
]


def bn_apply(bn, shape, x, residual, relu):
    """The fused batch-norm op of the kernels on (N,C,S) tensors: bn(x) [+ residual] [then ReLU],
    with the module seeing x in `shape`."""
    y = bn(x.reshape(shape)).reshape(x.shape)
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y


def make_batchnorm():
    fx = Fixture("batchnorm.safetensors")
    fx.meta("count", str(len(BN_CASES)))
    for i, c in enumerate(BN_CASES):
        name = f"bn{i}"
        seed(name)
        shape = c["shape"]
        n, ch, s = shape[0], shape[1], math.prod(shape[2:])
        # per-channel offsets and scales so the batch statistics are far from 0 and 1
        x = torch.randn(n, ch, s) * (0.5 + torch.rand(ch, 1)) + torch.randn(ch, 1)
        gamma = 1.0 + 0.3 * torch.randn(ch)
        beta = 0.3 * torch.randn(ch)
        running_mean = 0.5 * torch.randn(ch)
        running_var = 0.5 + torch.rand(ch)
        residual = torch.randn(n, ch, s) if c["residual"] else None
        dy = torch.randn(n, ch, s)

        bn = getattr(nn, c["module"])(ch, eps=BN_EPS, momentum=BN_MOMENTUM).double()
        with torch.no_grad():
            bn.weight.copy_(gamma)
            bn.bias.copy_(beta)
            bn.running_mean.copy_(running_mean)
            bn.running_var.copy_(running_var)
        xd = leaf(x)
        resd = leaf(residual) if residual is not None else None
        bn.eval()
        with torch.no_grad():
            y_eval = bn_apply(bn, shape, xd, resd, c["relu"])
        bn.train()
        y = bn_apply(bn, shape, xd, resd, c["relu"])
        y.backward(dy.double())
        xs = xd.detach().transpose(0, 1).reshape(ch, -1)
        mean = xs.mean(dim=1)
        invstd = 1.0 / torch.sqrt(xs.var(dim=1, unbiased=False) + BN_EPS)

        fx.meta(name, dict(n=n, c=ch, s=s, relu=c["relu"], residual=c["residual"],
                           momentum=BN_MOMENTUM, eps=BN_EPS, module=c["module"], shape=shape))
        fx.add(f"{name}.x", x)
        fx.add(f"{name}.gamma", gamma)
        fx.add(f"{name}.beta", beta)
        fx.add(f"{name}.running_mean_in", running_mean)
        fx.add(f"{name}.running_var_in", running_var)
        if residual is not None:
            fx.add(f"{name}.residual", residual)
        fx.add(f"{name}.y", y)
        fx.add(f"{name}.mean", mean)
        fx.add(f"{name}.invstd", invstd)
        fx.add(f"{name}.running_mean_out", bn.running_mean)
        fx.add(f"{name}.running_var_out", bn.running_var)
        fx.add(f"{name}.y_eval", y_eval)
        fx.add(f"{name}.dy", dy)
        fx.add(f"{name}.dx", xd.grad)
        fx.add(f"{name}.dgamma", bn.weight.grad)
        fx.add(f"{name}.dbeta", bn.bias.grad)
        if residual is not None:
            fx.add(f"{name}.dres", resd.grad)
    fx.save()


# ---------------------------------------------------------------- linear and ReLU
LINEAR_CASES = [dict(n=4, out=3, bias=True, **{"in": 5}), dict(n=6, out=4, bias=False, **{"in": 7}),
                dict(n=1, out=5, bias=True, **{"in": 8})]


def make_linear():
    fx = Fixture("linear.safetensors")
    fx.meta("count", str(len(LINEAR_CASES)))
    for i, c in enumerate(LINEAR_CASES):
        name = f"linear{i}"
        seed(name)
        x = torch.randn(c["n"], c["in"])
        w = torch.randn(c["out"], c["in"]) / math.sqrt(c["in"])
        b = torch.randn(c["out"]) if c["bias"] else None
        xd, wd = leaf(x), leaf(w)
        bd = leaf(b) if c["bias"] else None
        y = F.linear(xd, wd, bd)
        dy = torch.randn(y.shape)
        y.backward(dy.double())
        fx.meta(name, c)
        fx.add(f"{name}.x", x)
        fx.add(f"{name}.w", w)
        if c["bias"]:
            fx.add(f"{name}.b", b)
        fx.add(f"{name}.y", y)
        fx.add(f"{name}.dy", dy)
        fx.add(f"{name}.dx", xd.grad)
        fx.add(f"{name}.dw", wd.grad)
        if c["bias"]:
            fx.add(f"{name}.db", bd.grad)
    fx.save()


def make_elementwise():
    fx = Fixture("elementwise.safetensors")
    name = "relu0"
    seed(name)
    x = torch.randn(3, 40)
    x[:, ::7] = 0.0  # exact zeros: ReLU passes no gradient there (dx = dy * (y > 0))
    xd = leaf(x)
    y = F.relu(xd)
    dy = torch.randn(y.shape)
    y.backward(dy.double())
    fx.add(f"{name}.x", x)
    fx.add(f"{name}.y", y)
    fx.add(f"{name}.dy", dy)
    fx.add(f"{name}.dx", xd.grad)
    fx.save()


# ---------------------------------------------------------------- VICReg loss
def off_diagonal(x):
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_loss(x, y, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    """The loss of facebookresearch/vicreg, with the covariance divided by the real N - 1.
    Returns the loss and its (invariance, variance, covariance) terms."""
    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    cov_loss = off_diagonal(cov_x).pow(2).sum().div(num_features) + \
        off_diagonal(cov_y).pow(2).sum().div(num_features)
    loss = sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss
    return loss, (repr_loss.detach(), std_loss.detach(), cov_loss.detach())


def independent_views(n, d):
    return torch.randn(n, d), torch.randn(n, d)


def correlated_views(n, d):
    """z2 = 0.5 z1 + noise, as two views of the same inputs."""
    z1 = torch.randn(n, d)
    return z1, 0.5 * z1 + 0.3 * torch.randn(n, d)


def mixed_std_views(n, d):
    """Half the dimensions with std about 2, half about 0.3: relu(1 - std) is active on half."""
    scale = torch.cat([torch.full((d // 2,), 2.0), torch.full((d - d // 2,), 0.3)])
    return torch.randn(n, d) * scale, torch.randn(n, d) * scale.flip(0)


DEFAULT_COEFFS = dict(sim=25.0, std=25.0, cov=1.0)
VICREG_CASES = [
    dict(n=8, d=16, views=independent_views, **DEFAULT_COEFFS),
    dict(n=32, d=64, views=correlated_views, **DEFAULT_COEFFS),
    dict(n=2, d=5, views=independent_views, **DEFAULT_COEFFS),  # the smallest batch
    dict(n=16, d=12, views=mixed_std_views, **DEFAULT_COEFFS),
    dict(n=12, d=10, views=independent_views, sim=10.0, std=5.0, cov=2.0),
]


def make_vicreg():
    fx = Fixture("vicreg.safetensors")
    fx.meta("count", str(len(VICREG_CASES)))
    for i, c in enumerate(VICREG_CASES):
        name = f"case{i}"
        seed(name)
        z1, z2 = c["views"](c["n"], c["d"])
        z1d, z2d = leaf(z1), leaf(z2)
        loss, (inv, var, cov) = vicreg_loss(z1d, z2d, c["sim"], c["std"], c["cov"])
        loss.backward()
        fx.meta(name, dict(n=c["n"], d=c["d"], sim=c["sim"], std=c["std"], cov=c["cov"],
                           loss=loss.item(), invariance=inv.item(), variance=var.item(),
                           covariance=cov.item()))
        fx.add(f"{name}.z1", z1)
        fx.add(f"{name}.z2", z2)
        fx.add(f"{name}.dz1", z1d.grad)
        fx.add(f"{name}.dz2", z2d.grad)
    fx.save()


# ---------------------------------------------------------------- optimisers
class LARS(torch.optim.Optimizer):
    """LARS as facebookresearch/vicreg's main_vicreg.py, with exclude_bias_and_norm as both
    filters: one-dimensional parameters get neither weight decay nor the trust ratio."""

    def __init__(self, params, lr, weight_decay=0.0, momentum=0.9, eta=0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim != 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm = torch.norm(p)
                    update_norm = torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0.0,
                                    torch.where(update_norm > 0, g["eta"] * param_norm / update_norm, one),
                                    one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


LARS_NOTE = "1-D params (the bias): no weight decay, no trust ratio"
OPTIMISERS = {
    "lars": dict(optimizer="lars", lr=0.3, momentum=0.9, eta=0.001, weight_decay=1e-6, note=LARS_NOTE),
    "lars_wd": dict(optimizer="lars", lr=0.3, momentum=0.9, eta=0.001, weight_decay=0.1, note=LARS_NOTE),
    # w starts at 0 (q = 1 as |w| = 0 on step 0) and step 1 has zero gradients with no weight
    # decay (q = 1 as |g| = 0)
    "lars_zero": dict(optimizer="lars", lr=0.3, momentum=0.9, eta=0.001, weight_decay=0.0,
                      note=LARS_NOTE + "; w_init is zero and the step-1 gradients are zero"),
    "sgd": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                note="torch.optim.SGD; weight decay on w and b"),
    "adamw": dict(optimizer="adamw", lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.05,
                  note="torch.optim.AdamW; weight decay on w and b"),
}
OPTIM_STEPS = 3


def make_optimiser(name, params):
    h = OPTIMISERS[name]
    if h["optimizer"] == "lars":
        return LARS(params, h["lr"], h["weight_decay"], h["momentum"], h["eta"])
    if h["optimizer"] == "sgd":
        return torch.optim.SGD(params, h["lr"], momentum=h["momentum"], weight_decay=h["weight_decay"])
    return torch.optim.AdamW(params, h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                             weight_decay=h["weight_decay"])


def make_optim():
    fx = Fixture("optim.safetensors")
    fx.meta("optimizers", ",".join(OPTIMISERS))
    fx.meta("steps", str(OPTIM_STEPS))
    for name, hyper in OPTIMISERS.items():
        seed(name)
        w_init = torch.zeros(6, 5) if name == "lars_zero" else torch.randn(6, 5)
        b_init = torch.randn(6)
        grads = [(0.1 * torch.randn(6, 5), 0.1 * torch.randn(6)) for _ in range(OPTIM_STEPS)]
        if name == "lars_zero":
            grads[1] = (torch.zeros(6, 5), torch.zeros(6))
        w, b = w_init.double().requires_grad_(True), b_init.double().requires_grad_(True)
        opt = make_optimiser(name, [w, b])
        fx.meta(name, hyper)
        fx.add(f"{name}.w_init", w_init)
        fx.add(f"{name}.b_init", b_init)
        for k, (gw, gb) in enumerate(grads):
            w.grad, b.grad = gw.double(), gb.double()
            opt.step()
            fx.add(f"{name}.w_g{k}", gw)
            fx.add(f"{name}.b_g{k}", gb)
            fx.add(f"{name}.w_step{k}", w)
            fx.add(f"{name}.b_step{k}", b)
    fx.save()


# ---------------------------------------------------------------- models
SPATIAL = {  # rank -> (convolution, batch norm, max pool)
    1: (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d),
}


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, in 1-D or 2-D."""
    expansion = 1

    def __init__(self, rank, cin, planes, stride, downsample):
        super().__init__()
        conv, bn, _ = SPATIAL[rank]
        self.conv1 = conv(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = conv(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self):
        return self.bn2

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride is on the 3x3 conv2), in 1-D or 2-D."""
    expansion = 4

    def __init__(self, rank, cin, planes, stride, downsample):
        super().__init__()
        conv, bn, _ = SPATIAL[rank]
        self.conv1 = conv(cin, planes, 1, bias=False)
        self.bn1 = bn(planes)
        self.conv2 = conv(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = bn(planes)
        self.conv3 = conv(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self):
        return self.bn3

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """torchvision's ResNet without fc, with parameter names equal to torchvision's, in 1-D or
    2-D: stem conv (no bias) + BN + ReLU + max pool, four stages of strides 1, 2, 2, 2, global
    average pool. Output (N, widths[3] * expansion)."""

    def __init__(self, rank, block, layers, widths, in_channels, stem, maxpool):
        super().__init__()
        conv, bn, pool = SPATIAL[rank]
        block = BLOCKS[block]
        self.conv1 = conv(in_channels, widths[0], stem["k"], stem["stride"], stem["pad"], bias=False)
        self.bn1 = bn(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = pool(maxpool["k"], maxpool["stride"], maxpool["pad"])
        cin = widths[0]
        for stage, (count, planes) in enumerate(zip(layers, widths)):
            cout = planes * block.expansion
            blocks = []
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                downsample = None
                if stride != 1 or cin != cout:
                    downsample = nn.Sequential(conv(cin, cout, 1, stride, bias=False), bn(cout))
                blocks.append(block(rank, cin, planes, stride, downsample))
                cin = cout
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.out_features = cin

    def blocks(self):
        return [b for stage in (self.layer1, self.layer2, self.layer3, self.layer4) for b in stage]

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(x, 2).mean(dim=2)


def expander(spec):
    """The reference expander "a-b-...-z": (Linear, BatchNorm1d, ReLU) per hidden layer, then
    a Linear without bias."""
    f = [int(v) for v in spec.split("-")]
    layers = []
    for i in range(len(f) - 2):
        layers += [nn.Linear(f[i], f[i + 1]), nn.BatchNorm1d(f[i + 1]), nn.ReLU(True)]
    layers.append(nn.Linear(f[-2], f[-1], bias=False))
    return nn.Sequential(*layers)


class VICReg(nn.Module):
    def __init__(self, backbone, projector):
        super().__init__()
        self.backbone = ResNet(**backbone)
        self.projector = expander(projector)

    def forward(self, x1, x2):  # two separate passes, as the reference (per-view BN statistics)
        return self.projector(self.backbone(x1)), self.projector(self.backbone(x2))


IMAGENET_STEM = dict(stem=dict(k=7, stride=2, pad=3), maxpool=dict(k=3, stride=2, pad=1))


def check_torchvision_names():
    """Our ResNet's state_dict has torchvision's names and shapes, fc aside."""
    for arch, block, layers in (("resnet18", "basic", [2, 2, 2, 2]),
                                ("resnet50", "bottleneck", [3, 4, 6, 3])):
        ours = ResNet(2, block, layers, [64, 128, 256, 512], 3, **IMAGENET_STEM).state_dict()
        theirs = getattr(torchvision.models, arch)().state_dict()
        want = [(k, v.shape) for k, v in theirs.items() if not k.startswith("fc.")]
        assert [(k, v.shape) for k, v in ours.items()] == want, arch


def randomize(model, calibration):
    """Random weights, BN gamma and beta around 1 and 0, and running statistics near those of a
    random calibration batch, perturbed: no zero or unit value can hide a bug, while the
    eval-mode activations stay O(1) as a trained model's do."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # fan_in: activations stay O(1)
        for m in norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.3, 0.3)
            m.momentum = 1.0  # the next forward sets the running statistics to the batch's
        model.train()(calibration)
        for m in norms:
            m.momentum = BN_MOMENTUM
            m.num_batches_tracked.zero_()
            m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape))
            m.running_var.mul_(torch.empty(m.running_var.shape).uniform_(0.8, 1.25))


def standard_init(backbone):
    """The toolkit's initialisation: kaiming-normal (fan_out) convolutions, BN gamma 1 and beta 0.
    The toolkit starts the last BN gamma of each block at 0 (zero_init_residual); here it gets
    small random values instead, so that gradients reach every parameter."""
    with torch.no_grad():
        for m in backbone.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in backbone.blocks():
            gamma = block.last_bn().weight
            gamma.copy_(0.1 * torch.rand(gamma.shape))


MODELS = {
    "model_r18_2d": (dict(rank=2, block="basic", layers=[2, 2, 2, 2], widths=[8, 16, 16, 32],
                          in_channels=3, **IMAGENET_STEM), [4, 3, 32, 32]),
    "model_r18_1d": (dict(rank=1, block="basic", layers=[2, 2, 2, 2], widths=[8, 16, 24, 32],
                          in_channels=1, stem=dict(k=80, stride=4, pad=38),
                          maxpool=dict(k=4, stride=4, pad=0)), [3, 1, 1600]),
    "model_r50_2d": (dict(rank=2, block="bottleneck", layers=[3, 4, 6, 3], widths=[4, 8, 8, 16],
                          in_channels=3, **IMAGENET_STEM), [4, 3, 64, 64]),
}


def make_model(name):
    config, input_shape = MODELS[name]
    seed(name)
    model = ResNet(**config)
    randomize(model, torch.randn(input_shape))
    x = torch.randn(input_shape)
    dy = torch.randn(input_shape[0], model.out_features)
    fx = Fixture(name + ".safetensors")
    fx.meta("config", dict(config, input=input_shape, out_features=model.out_features,
                           bn_momentum=BN_MOMENTUM, bn_eps=BN_EPS, reference_precision="float64"))
    for key, value in model.state_dict().items():
        fx.add("init." + key, value)
    model.double().eval()
    with torch.no_grad():
        repr_eval = model(x.double())
    model.train()
    xd = leaf(x)
    representation = model(xd)
    representation.backward(dy.double())
    fx.add("x", x)
    fx.add("repr", representation)
    fx.add("repr_eval", repr_eval)
    fx.add("dy", dy)
    fx.add("dx", xd.grad)
    for key, p in model.named_parameters():
        fx.add("grad." + key, p.grad)
    for key, value in model.named_buffers():
        if key.endswith(("running_mean", "running_var")):
            fx.add("after." + key, value)
    fx.save()


TRAIN_STEP = dict(backbone=MODELS["model_r18_2d"][0], projector="32-128-128-128", batch=8,
                  view=[3, 32, 32], sim=25.0, std=25.0, cov=1.0, lr=0.2, weight_decay=1e-6,
                  momentum=0.9, eta=0.001, bn_momentum=BN_MOMENTUM, bn_eps=BN_EPS)


def make_train_step():
    c = TRAIN_STEP
    seed("train_step")
    model = VICReg(c["backbone"], c["projector"])  # Linear layers keep PyTorch's default init
    standard_init(model.backbone)
    x1 = torch.randn(c["batch"], *c["view"])
    x2 = torch.randn(c["batch"], *c["view"])
    fx = Fixture("train_step.safetensors")
    for key, value in model.state_dict().items():
        fx.add("init." + key, value)
    model.double().train()
    z1, z2 = model(x1.double(), x2.double())
    loss, (inv, var, cov) = vicreg_loss(z1, z2, c["sim"], c["std"], c["cov"])
    loss.backward()
    LARS(model.parameters(), c["lr"], c["weight_decay"], c["momentum"], c["eta"]).step()
    fx.meta("config", dict(c, loss=loss.item(), invariance=inv.item(), variance=var.item(),
                           covariance=cov.item(), lars_exclude="1-D parameters: no weight decay, "
                           "no trust ratio", momentum_init="zero", reference_precision="float64"))
    fx.add("x1", x1)
    fx.add("x2", x2)
    fx.add("z1", z1)
    fx.add("z2", z2)
    for key, p in model.named_parameters():
        fx.add("grad." + key, p.grad)
    for key, value in model.state_dict().items():
        fx.add("after." + key, value)
    fx.save()


def main():
    torch.set_num_threads(1)  # the same float64 sums on every run, so the files are reproducible
    os.makedirs(OUT, exist_ok=True)
    check_torchvision_names()
    make_conv()
    make_pool()
    make_batchnorm()
    make_linear()
    make_elementwise()
    make_vicreg()
    make_optim()
    for name in MODELS:
        make_model(name)
    make_train_step()
    for f in sorted(os.listdir(OUT)):
        print(f"{os.path.getsize(os.path.join(OUT, f)):9d}  {os.path.join(OUT, f)}")


if __name__ == "__main__":
    main()
