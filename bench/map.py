"""What the stability-map engine costs: against the practical limit, vmap, and one run at a time.

For `linear` (one neuron, x = 1…20, full-batch SGD on the MSE, a grid of lr × data-set size
× seed), `xor` (2-H-1 sigmoid MLPs, widths 2…32) and `relu_head` (1-128-1 ReLU MLPs with a
ReLU head, mini-batches of 100 of 600 rows shuffled per seed every epoch, 20 epochs), all
measured in one run on this machine:

  engine   losslab.engine.batched.train_sgd (what `losslab map` runs)
  limit    a hand-written batched loop: stacked weights, the backward written out, no host
           sync (the practical limit for plain PyTorch)
  vmap     vmap(grad(functional_call)) over the stacked nn.Module, plain SGD step
  single   one configuration at a time: a plain PyTorch loop (nn.Linear, SGD, MSELoss), and
           `fit` (the single-run path `losslab run` uses), timed on a few and per config

Then 1,000,000 `linear` configurations × 500 epochs through the engine (chunked as
`losslab map` chunks them, 2 threads), its peak memory, and GFLOP/s against a large torch.mm.

`--device cuda` measures at scale on a GPU instead (the issue's 10,000,000 `linear` and
100,000 `relu_head` configurations by default): engine against the hand-written limit on one
chunk (best of 3), then the engine over every configuration in chunks, with the device's
peak memory. `--device cpu --scale-linear 20000 --scale-relu 300` tries the same path here.

    .venv/bin/python bench/map.py [--configs 10000] [--epochs 500] [--relu-configs 1000] [--million]
    python bench/map.py --device cuda [--scale-linear 10000000] [--scale-relu 100000] [--chunk 1000000]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from losslab.engine.batched import CPU_CHUNK, Stacked, train_sgd
from losslab.engine.runtime import BATCHED_MMAP_THRESHOLD, steady_malloc

X = torch.arange(1.0, 21.0)
Y = 0.5 * X


def _linear_grid(c: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lr = torch.exp(torch.empty(c).uniform_(np.log(1e-4), np.log(0.3), generator=g))
    count = torch.randint(2, 21, (c,), generator=g)
    w = torch.empty(c).uniform_(-(3**0.5), 3**0.5, generator=g)
    return lr, count, w, torch.zeros(c)


def limit_linear(lr, count, w, b, epochs: int) -> torch.Tensor:
    """The hand-written batched loop: what plain PyTorch can do at best for this grid."""
    w, b = w.clone(), b.clone()
    mask = torch.arange(20, device=count.device)[None, :] < count[:, None]
    scale = (2.0 / count.double()).float()[:, None]
    cnt = count.float()
    for _ in range(epochs):
        r = torch.where(mask, w[:, None] * X + b[:, None] - Y, 0.0)
        loss = (r * r).sum(1) / cnt
        g = r * scale
        w -= lr * (g * X).sum(1)
        b -= lr * g.sum(1)
    return loss


def engine_linear(lr, count, w, b, epochs: int) -> torch.Tensor:
    net = Stacked([w.view(-1, 1, 1).clone()], [b.view(-1, 1).clone()], None, None)
    return train_sgd(net, X[:, None], Y[:, None], lr, epochs, count=count).final


def vmap_linear(lr, count, w, b, epochs: int) -> torch.Tensor:
    c = len(w)
    base = nn.Linear(1, 1)
    params = {"weight": w.view(c, 1, 1).clone(), "bias": b.view(c, 1).clone()}
    mask = (torch.arange(20)[None, :] < count[:, None]).float()

    def loss(p, m, n):
        out = functional_call(base, p, (X[:, None],))[:, 0]
        return (((out - Y) * m) ** 2).sum() / n

    step = vmap(grad(loss))
    for _ in range(epochs):
        gr = step(params, mask, count.float())
        params = {k: v - lr.view(-1, *[1] * (v.ndim - 1)) * gr[k] for k, v in params.items()}
    return vmap(loss)(params, mask, count.float())


def single_linear(lr: float, n: int, w: float, epochs: int) -> float:
    m = nn.Linear(1, 1)
    with torch.no_grad():
        m.weight.fill_(w)
        m.bias.zero_()
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    x, y = X[:n, None], Y[:n, None]
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.mse_loss(m(x), y)
        loss.backward()
        opt.step()
    return float(loss)


def _xor_stack(c: int, width: int) -> tuple[Stacked, torch.Tensor]:
    torch.manual_seed(width)
    models = [nn.Sequential(nn.Linear(2, width), nn.Sigmoid(), nn.Linear(width, 1)) for _ in range(c)]
    params = {k: v.detach() for k, v in stack_module_state(models)[0].items()}
    weights, biases = [params["0.weight"], params["2.weight"]], [params["0.bias"], params["2.bias"]]
    net = Stacked(weights, biases, "sigmoid", None)
    return net, torch.exp(torch.empty(c).uniform_(np.log(1e-2), np.log(30.0)))


XOR_X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])


def limit_xor(net: Stacked, lr: torch.Tensor, epochs: int) -> torch.Tensor:
    w1, w2 = (t.detach().clone() for t in net.weights)
    b1, b2 = (t.detach().clone() for t in net.biases)
    lr3, lr2 = lr.view(-1, 1, 1), lr.view(-1, 1)
    for _ in range(epochs):
        h = torch.sigmoid(torch.matmul(XOR_X, w1.transpose(1, 2)) + b1[:, None, :])
        out = torch.baddbmm(b2[:, None, :], h, w2.transpose(1, 2))
        r = out - XOR_Y
        loss = (r * r).mean((1, 2))
        g = r * 0.5
        dh = torch.bmm(g, w2) * h * (1 - h)
        w2 -= lr3 * torch.bmm(g.transpose(1, 2), h)
        b2 -= lr2 * g.sum(1)
        w1 -= lr3 * torch.matmul(dh.transpose(1, 2), XOR_X)
        b1 -= lr2 * dh.sum(1)
    return loss


RELU_X = torch.arange(1.0, 601.0)[:, None] * 0.01  # relu_head's training rows, input scale 0.01
RELU_Y = 2 * torch.arange(1.0, 601.0)[:, None]
RELU_SEEDS = [0, 1, 2]


def _relu_stack(c: int) -> tuple[Stacked, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(1, 128), nn.ReLU(), nn.Linear(128, 1), nn.ReLU()) for _ in range(c)]
    params = {k: v.detach() for k, v in stack_module_state(models)[0].items()}
    net = Stacked(
        [params["0.weight"], params["2.weight"]], [params["0.bias"], params["2.bias"]], "relu", "relu"
    )
    lr = torch.exp(torch.empty(c).uniform_(np.log(1e-6), np.log(1e-2)))
    return net, lr, torch.arange(c) % len(RELU_SEEDS)


def _relu_orders(epoch: int, seed_of: torch.Tensor) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(s * 100_003 + epoch) for s in RELU_SEEDS]
    return torch.stack([torch.randperm(600, generator=g) for g in gens]).to(seed_of.device)[seed_of]


def limit_relu(net: Stacked, lr: torch.Tensor, seed_of: torch.Tensor, epochs: int) -> torch.Tensor:
    w1, w2 = (t.detach().clone() for t in net.weights)
    b1, b2 = (t.detach().clone() for t in net.biases)
    lr3, lr2 = lr.view(-1, 1, 1), lr.view(-1, 1)
    for epoch in range(epochs):
        order = _relu_orders(epoch, seed_of)
        total = torch.zeros(len(lr), device=lr.device)
        for start in range(0, 600, 100):
            idx = order[:, start : start + 100]
            x, y = RELU_X[idx], RELU_Y[idx]
            h = torch.relu(torch.addcmul(b1[:, None, :], x, w1.transpose(1, 2)))
            out = torch.relu(torch.baddbmm(b2[:, None, :], h, w2.transpose(1, 2)))
            r = out - y
            total += (r * r).mean((1, 2))
            g = torch.ops.aten.threshold_backward(r * 0.02, out, 0.0)
            dh = torch.ops.aten.threshold_backward(g * w2, h, 0.0)
            w2 -= lr3 * torch.bmm(g.transpose(1, 2), h)
            b2 -= lr2 * g.sum(1)
            w1 -= lr3 * (dh * x).sum(1)[..., None]
            b1 -= lr2 * dh.sum(1)
    return total / 6


def vmap_relu(net: Stacked, lr: torch.Tensor, seed_of: torch.Tensor, epochs: int) -> torch.Tensor:
    base = nn.Sequential(nn.Linear(1, 128), nn.ReLU(), nn.Linear(128, 1), nn.ReLU())
    params = {"0.weight": net.weights[0].clone(), "0.bias": net.biases[0].clone(),
              "2.weight": net.weights[1].clone(), "2.bias": net.biases[1].clone()}  # fmt: skip

    def loss(p, x, y):
        return nn.functional.mse_loss(functional_call(base, p, (x,)), y)

    step = vmap(grad(loss))
    for epoch in range(epochs):
        order = _relu_orders(epoch, seed_of)
        for start in range(0, 600, 100):
            idx = order[:, start : start + 100]
            gr = step(params, RELU_X[idx], RELU_Y[idx])
            params = {k: v - lr.view(-1, *[1] * (v.ndim - 1)) * gr[k] for k, v in params.items()}
    return vmap(loss)(params, RELU_X.expand(len(lr), 600, 1), RELU_Y.expand(len(lr), 600, 1))


def engine_relu(net: Stacked, lr: torch.Tensor, seed_of: torch.Tensor, epochs: int) -> torch.Tensor:
    copy = Stacked([w.clone() for w in net.weights], [b.clone() for b in net.biases], "relu", "relu")
    return train_sgd(copy, RELU_X, RELU_Y, lr, epochs, batch_size=100, shuffle=(RELU_SEEDS, seed_of)).final


def _time(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _best(fns, *args, rounds: int = 3) -> list[tuple[float, object]]:
    """Each function's best (time, result) of `rounds`, the functions interleaved: on a
    shared machine the first call and any one call may be slow for reasons of its own."""
    runs = [[_time(f, *args) for f in fns] for _ in range(rounds)]
    return [min((r[i] for r in runs), key=lambda t: t[0]) for i in range(len(fns))]


def engine_xor(net: Stacked, lr: torch.Tensor, epochs: int) -> torch.Tensor:
    copy = Stacked([w.clone() for w in net.weights], [b.clone() for b in net.biases], "sigmoid", None)
    return train_sgd(copy, XOR_X, XOR_Y, lr, epochs).final


def _move(device: torch.device) -> None:
    """Put the shared data on the device the loops run on."""
    global X, Y, XOR_X, XOR_Y, RELU_X, RELU_Y
    X, Y, XOR_X, XOR_Y, RELU_X, RELU_Y = (t.to(device) for t in (X, Y, XOR_X, XOR_Y, RELU_X, RELU_Y))


def _synced(device: torch.device, fn, *args) -> tuple[float, object]:
    """(seconds, result) with the device's queue drained before and after."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn(*args)
    sync()
    return time.perf_counter() - start, out


def at_scale(device: torch.device, n_linear: int, n_relu: int, chunk: int, epochs: int) -> None:
    """The engine against the limit on one chunk, then every configuration in chunks."""
    _move(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first = min(chunk, n_linear)
    grid = [t.to(device) for t in _linear_grid(first)]
    runs = [[_synced(device, f, *grid, epochs) for f in (limit_linear, engine_linear)] for _ in range(3)]
    (t_l, l_l), (t_e, l_e) = (min((r[i] for r in runs), key=lambda t: t[0]) for i in range(2))
    same = bool((torch.isfinite(l_e) == torch.isfinite(l_l)).all())
    print(f"{device}: linear, one chunk of {first:,} × {epochs} epochs (best of 3): limit {t_l:.3f} s, "
          f"engine {t_e:.3f} s ({t_e / t_l:.2f}×; the same inf/NaN configs {same})")  # fmt: skip
    total = 0.0
    for lo in range(0, n_linear, chunk):
        part = [t.to(device) for t in _linear_grid(min(chunk, n_linear - lo), seed=lo)]
        took, _ = _synced(device, engine_linear, *part, epochs)
        total += took
    print(f"{device}: linear, {n_linear:,} configs × {epochs} epochs through the engine in chunks of "
          f"{chunk:,}: {total:.1f} s ({n_linear / total:,.0f} configs/s)")  # fmt: skip
    relu_chunk = min(n_relu, max(1, chunk // 40))  # a 1-128-1 model holds ~40× a line's buffers
    t_l = t_e = 0.0
    for lo in range(0, n_relu, relu_chunk):
        net, lr, seed_of = _relu_stack(min(relu_chunk, n_relu - lo))
        net = Stacked([w.to(device) for w in net.weights], [b.to(device) for b in net.biases], "relu", "relu")
        lr, seed_of = lr.to(device), seed_of.to(device)
        t_l += _synced(device, limit_relu, net, lr, seed_of, 20)[0]
        t_e += _synced(device, engine_relu, net, lr, seed_of, 20)[0]
    print(f"{device}: relu_head, {n_relu:,} configs × 20 epochs × 6 batches in chunks of {relu_chunk:,}: "
          f"limit {t_l:.1f} s, engine {t_e:.1f} s ({t_e / t_l:.2f}×)")  # fmt: skip
    if device.type == "cuda":
        print(f"{device}: peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--relu-configs", type=int, default=1_000)
    ap.add_argument("--million", action="store_true", help="also 1,000,000 linear configs (2 threads)")
    ap.add_argument("--device", help="measure at scale on this device instead (cuda, or cpu to try it)")
    ap.add_argument("--scale-linear", type=int, default=10_000_000)
    ap.add_argument("--scale-relu", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=1_000_000, help="linear configs per chunk at scale")
    args = ap.parse_args()
    steady_malloc(
        BATCHED_MMAP_THRESHOLD, trim=4 * BATCHED_MMAP_THRESHOLD
    )  # as `losslab map` runs (the loops below share it)
    if args.device:
        torch.set_num_threads(2 if args.device == "cpu" else torch.get_num_threads())
        at_scale(torch.device(args.device), args.scale_linear, args.scale_relu, args.chunk, args.epochs)
        return
    torch.set_num_threads(1)
    c, e = args.configs, args.epochs
    grid = _linear_grid(c)
    best = _best((limit_linear, engine_linear, vmap_linear), *grid, e)
    (t_limit, l_limit), (t_engine, l_engine), (t_vmap, _) = best
    k = 20
    lr, count, w, _ = grid
    one = [(float(lr[i]), int(count[i]), float(w[i])) for i in range(k)]
    t_single, _ = _time(lambda: [single_linear(*cfg, e) for cfg in one])
    per_single = t_single / k
    fin = torch.isfinite(l_limit) & (l_limit > 1e-3)
    same = bool((torch.isfinite(l_engine) == torch.isfinite(l_limit)).all())
    rel = float(((l_engine[fin] - l_limit[fin]).abs() / l_limit[fin]).max())
    print(
        f"linear, {c:,} configs × {e} epochs, 1 thread (best of 3; engine vs limit: the same inf/NaN "
        f"configs {same}, final losses > 1e-3 within {rel:.1e} relative)"
    )
    print(f"  limit (hand-written)  {t_limit:8.2f} s")
    print(f"  engine                {t_engine:8.2f} s   {t_engine / t_limit:5.2f}× the limit")
    print(f"  vmap(grad(...))       {t_vmap:8.2f} s   {t_vmap / t_limit:5.2f}× the limit")
    print(
        f"  one at a time (loop)  {per_single * 1e3:8.2f} ms per config -> engine is "
        f"{per_single / (t_engine / c):,.0f}× faster per config"
    )
    try:
        from losslab.core.config import compose  # Deferred: the single-run path needs the project
        from losslab.fit import fit  # Deferred: see above

        cfg = compose(["scenario=linear", "variant=linear/broken", "seeds=[0]"])
        fit(cfg)  # warm-up
        t_fit, _ = _time(lambda: [fit(cfg) for _ in range(3)])
        print(
            f"  one at a time (fit)   {t_fit / 3 * 1e3:8.0f} ms per config -> engine is "
            f"{t_fit / 3 / (t_engine / c):,.0f}× faster per config"
        )
    except Exception as ex:  # outside a project: say why and go on
        print(f"  one at a time (fit)   skipped: {type(ex).__name__}: {ex}")

    for width in (2, 8, 32):
        cx = c // 3
        net, lrx = _xor_stack(cx, width)
        (t_l, _), (t_e, _) = _best((limit_xor, engine_xor), net, lrx, e)
        print(
            f"xor width {width:>2}, {cx:,} configs × {e} (best of 3): limit {t_l:6.2f} s, "
            f"engine {t_e:6.2f} s ({t_e / t_l:4.2f}×)"
        )

    net, lrr, seed_of = _relu_stack(args.relu_configs)
    (t_l, l_l), (t_e, l_e), (t_v, _) = _best((limit_relu, engine_relu, vmap_relu), net, lrr, seed_of, 20)
    fin = torch.isfinite(l_l) & (l_l > 1e-3)
    rel = float(((l_e[fin] - l_l[fin]).abs() / l_l[fin]).max())
    print(
        f"relu_head, {args.relu_configs:,} configs × 20 epochs × 6 batches (best of 3): limit {t_l:6.2f} s, "
        f"engine {t_e:6.2f} s ({t_e / t_l:4.2f}×), vmap {t_v:6.2f} s ({t_v / t_l:4.2f}×); "
        f"engine vs limit final losses within {rel:.1e} relative"
    )

    a = torch.randn(2048, 2048)
    t_mm, _ = _time(lambda: [a @ a for _ in range(5)])
    mm = 5 * 2 * 2048**3 / t_mm / 1e9
    flops = 12 * 20 * c * e  # per config-epoch: ~12 flops per data row, forward and backward
    print(f"GFLOP/s: engine {flops / t_engine / 1e9:.2f} (linear), torch.mm 2048² {mm:.1f} (1 thread)")

    if args.million:
        torch.set_num_threads(2)
        n, chunk = 1_000_000, CPU_CHUNK
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        for lo in range(0, n, chunk):
            engine_linear(*_linear_grid(chunk, seed=lo), e)
        took = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(
            f"1,000,000 linear configs × {e} epochs, 2 threads, chunks of {chunk:,}: {took:.1f} s, "
            f"peak RSS {peak:.2f} GiB (was {before / 2**20:.2f} GiB before)"
        )


if __name__ == "__main__":
    main()
