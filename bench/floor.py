"""The plain-PyTorch floor: every scenario's variants × seeds × epochs in one process.

No losslab, no Lightning, no tracking: data from data/<scenario>/*.csv, a model, a loop,
each epoch's loss recorded. This is what the pipeline's cost is measured against.
Simplification: scratch_backprop trains its variants with autograd (the same work per
step as the hand-written backward, which the pipeline also checks against autograd).

    python bench/floor.py DATA_DIR SEEDS [SCENARIO ...]
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import torch
from torch import nn


def table(path: Path, cols: list[str]) -> torch.Tensor:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return torch.tensor([[float(r[c]) for c in cols] for r in rows])


def fit(model, x, y, opt, loss_fn, epochs, batch=None, seed=0, sched=None) -> list[float]:
    losses, n = [], len(x)
    for epoch in range(epochs):
        if batch is None:
            batches = [(x, y)]
        else:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            batches = [(x[perm[i : i + batch]], y[perm[i : i + batch]]) for i in range(0, n, batch)]
        total = 0.0
        for xb, yb in batches:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.item()
        losses.append(total / len(batches))
    return losses


def mlp(sizes, act, out_act, w_init, b_init) -> nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        w_init(lin.weight)
        b_init(lin.bias)
        layers.append(lin)
        a = act if i < len(sizes) - 2 else out_act
        if a is not None:
            layers.append(a())
    return nn.Sequential(*layers)


def linear(data: Path, seeds: list[int]) -> None:
    xy = table(data / "linear" / "points.csv", ["x", "y"])
    x_all, y_all = xy[:, :1], xy[:, 1:]
    variants = [
        dict(lr=0.01),
        dict(lr=1e-4),
        dict(lr=1e-3, adam=True),
        dict(lr=0.01, std=True),
        dict(lr=0.01, n=10),
    ]
    for v in variants:
        x, y = x_all[: v.get("n", 20)], y_all[: v.get("n", 20)]
        if v.get("std"):
            x = (x - x.mean()) / x.std(unbiased=False)
        for seed in seeds:
            torch.manual_seed(seed)
            m = mlp([1, 1], None, None, nn.init.xavier_uniform_, nn.init.zeros_)
            opt = (
                torch.optim.Adam(m.parameters(), lr=v["lr"])
                if v.get("adam")
                else torch.optim.SGD(m.parameters(), lr=v["lr"])
            )
            fit(m, x, y, opt, nn.MSELoss(), 500)


def xor(data: Path, seeds: list[int]) -> None:
    t = table(data / "xor" / "points.csv", ["x1", "x2", "y"])
    x, y = t[:, :2], t[:, 2:]
    variants = [
        dict(lr=1.0, epochs=500),
        dict(lr=0.3, epochs=2000, flat=True),
        dict(lr=0.3, epochs=2000),
        dict(lr=0.01, epochs=500, adam=True),
        dict(lr=1.0, epochs=2000, bce=True),
    ]
    normal = lambda std: lambda w: nn.init.normal_(w, 0.0, std)  # noqa: E731
    for v in variants:
        for seed in seeds:
            torch.manual_seed(seed)
            m = mlp([2, 4, 1], nn.Sigmoid, None, normal(0.5), normal(0.05))
            opt = (
                torch.optim.Adam(m.parameters(), lr=v["lr"])
                if v.get("adam")
                else torch.optim.SGD(m.parameters(), lr=v["lr"])
            )
            loss = nn.BCEWithLogitsLoss() if v.get("bce") else nn.MSELoss()
            fit(m, x, y[:, 0] if v.get("flat") else y, opt, loss, v["epochs"])


def relu_head(data: Path, seeds: list[int]) -> None:
    line = table(data / "relu_head" / "line.csv", ["x", "y"])
    normal = table(data / "relu_head" / "normal.csv", ["x", "y"])
    variants = [
        dict(data=line, head=True, lr=0.01, epochs=20),
        dict(data=normal, lr=0.01, epochs=200, decay=1e-6),
        dict(data=line, lr=1e-4, epochs=200, adam=True),
        dict(data=line, lr=1e-4, epochs=1000, adam=True),
        dict(data=line, lr=0.1, epochs=1000, minmax=True),
    ]
    for v in variants:
        x, y = v["data"][:600, :1], v["data"][:600, 1:]
        if v.get("minmax"):
            x, y = (x - x.min()) / (x.max() - x.min()), (y - y.min()) / (y.max() - y.min())
        for seed in seeds:
            torch.manual_seed(seed)
            m = mlp(
                [1, 128, 1],
                nn.ReLU,
                nn.ReLU if v.get("head") else None,
                nn.init.xavier_uniform_,
                nn.init.zeros_,
            )
            opt = (
                torch.optim.Adam(m.parameters(), lr=v["lr"])
                if v.get("adam")
                else torch.optim.SGD(m.parameters(), lr=v["lr"])
            )
            sched = None
            if v.get("decay"):
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t, d=v["decay"]: 1 / (1 + d * t))
            fit(m, x, y, opt, nn.MSELoss(), v["epochs"], batch=100, seed=seed, sched=sched)


def scratch_backprop(data: Path, seeds: list[int]) -> None:
    moons = table(data / "scratch_backprop" / "moons.csv", ["x1", "x2", "y"])
    xor_t = table(data / "scratch_backprop" / "xor.csv", ["x1", "x2", "y"])

    def bce(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = p.clamp(1e-10, 1 - 1e-10)
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()

    # broken, fixed_backward, fixed, fixed_fast, 3 × only_*, fixed_xor
    variants = (
        [(moons, 1.0, 0.1)] * 2 + [(moons, 100.0, 0.01)] + [(moons, 100.0, 2.0)] * 4 + [(xor_t, 100.0, 2.0)]
    )
    for t, div, lr in variants:
        x, y = t[:, :2], t[:, 2:]
        for seed in seeds:
            torch.manual_seed(seed)
            m = nn.Sequential(nn.Linear(2, 16), nn.Sigmoid(), nn.Linear(16, 1), nn.Sigmoid())
            with torch.no_grad():
                for lin in (m[0], m[2]):
                    scale = 6 / math.sqrt(lin.in_features * lin.out_features) / div
                    lin.weight.copy_(torch.randn_like(lin.weight) * scale)
                    lin.bias.copy_(torch.randn_like(lin.bias) * scale)
            fit(m, x, y, torch.optim.SGD(m.parameters(), lr=lr), bce, 5000)


SCENARIOS = {"linear": linear, "xor": xor, "relu_head": relu_head, "scratch_backprop": scratch_backprop}

if __name__ == "__main__":
    data, seeds = Path(sys.argv[1]), [int(s) for s in sys.argv[2].split(",")]
    for name in sys.argv[3:] or list(SCENARIOS):
        SCENARIOS[name](data, seeds)
