"""Thousands of small MLPs trained as one tensor program: the stability maps' engine.

Every configuration (a learning rate, a data-set size, a seed) is one slice of stacked
weights [C, out, in]; gradient descent (SGD or Adam, `engine.updates`, each configuration
with its own lr) on the MSE or BCE with logits (`engine.losses`) runs on all slices at
once, the backward written out (the chain rule per layer, a few batched matmuls), with no
host synchronisation inside the epoch loop. `vmap(grad(functional_call))` computes the same
numbers but is 5-17× slower on these tiny layers (bench/map.py): its per-op batching rules
cost more than the arithmetic. The numbers are those of the single-run path (autograd, one
model per seed) to float32 rounding; tests/test_maps.py checks it per epoch, diverging
cells included. A data-set size axis is a mask over the rows (configuration c sees its first
count[c] rows), so different sizes still train as one tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from losslab.engine.losses import loss_and_grad, scale_of
from losslab.engine.updates import SGD, Adam

ACTIVATIONS = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
# Configurations per chunk on a CPU: the per-epoch tensors then stay in cache, which beats
# bigger chunks by ~1.3× on this memory-bound work (bench/map.py); a GPU takes all it can.
CPU_CHUNK = 8192


def layout(model: nn.Module) -> tuple[list[int], str | None, str | None]:
    """(the Linear layers' positions, the activation between them, the head's) of an `mlp`:
    Linear layers with biases, one kind of ReLU, Sigmoid or Tanh between every two, an
    optional one after the last; ValueError for any other module."""
    mods = list(model) if isinstance(model, nn.Sequential) else [None]
    kinds = [None if isinstance(m, nn.Linear) else ACTIVATIONS.get(type(m), "?") for m in mods]
    lin = [i for i, k in enumerate(kinds) if k is None]
    between = {kinds[i + 1] for i in lin[:-1]}
    odd = "?" in kinds or not lin or lin != list(range(0, 2 * len(lin), 2)) or len(mods) > 2 * len(lin)
    if odd or len(between) > 1 or any(mods[i].bias is None for i in lin):
        raise ValueError("the batched engine trains Linear layers with ReLU, Sigmoid or Tanh between them")
    head = kinds[-1] if len(mods) == 2 * len(lin) else None
    return lin, next(iter(between), None), head


@dataclass
class Stacked:
    """C stacked MLPs of one shape: weights[l] is [C, out, in], biases[l] is [C, out]."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    activation: str | None  # between layers
    output_activation: str | None
    exact: bool = False  # matmuls where a broadcast is faster: bitwise the single-run path

    @classmethod
    def of(cls, models: list[nn.Sequential]) -> Stacked:
        """Stack same-shaped `mlp`s (Linear layers, one activation kind, an optional head)."""
        linears, hidden, head = layout(models[0])
        weights = [torch.stack([m[i].weight.detach() for m in models]) for i in linears]
        biases = [torch.stack([m[i].bias.detach() for m in models]) for i in linears]
        return cls(weights, biases, hidden, head)

    def to(self, device: torch.device | str) -> Stacked:
        return Stacked(
            [w.to(device) for w in self.weights],
            [b.to(device) for b in self.biases],
            self.activation,
            self.output_activation,
            self.exact,
        )

    def __len__(self) -> int:
        return self.weights[0].shape[0]


@dataclass
class Trace:
    """What each configuration did: first and last epoch's loss, the first epoch (1-based)
    whose loss was inf or NaN (0: none), and the per-epoch loss of the configurations kept."""

    initial: torch.Tensor  # [C]
    final: torch.Tensor  # [C]
    first_nonfinite: torch.Tensor  # [C] int64
    curves: torch.Tensor  # [K, epochs] for `keep`
    tail: torch.Tensor  # [C, T]: every configuration's last T losses (what `classify` reads)
    peak: torch.Tensor  # [C]: the highest loss of any epoch (NaN once it was NaN)
    start: torch.Tensor  # [C]: the loss on every row before the first update


def _act(kind: str | None, z: torch.Tensor) -> torch.Tensor:
    if kind == "relu":
        return torch.relu(z)
    if kind == "sigmoid":
        return torch.sigmoid(z)
    if kind == "tanh":
        return torch.tanh(z)
    return z


def _act_grad(kind: str | None, z: torch.Tensor, h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """g · act'(z), from the activation's output h where that is cheaper."""
    if kind == "relu":  # autograd's own kernel: g where h > 0, else 0 (an inf g included)
        return torch.ops.aten.threshold_backward(g, h, 0.0)
    if kind == "sigmoid":
        return torch.ops.aten.sigmoid_backward(g, h)
    if kind == "tanh":
        return torch.ops.aten.tanh_backward(g, h)
    return g


def _affine(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """h [N, in] (shared) or [C, N, in] times w [C, out, in]^T plus b: [C, N, out]."""
    if w.shape[2] == 1 and not exact:  # one input: a broadcast multiply beats a matmul with inner size 1
        return torch.addcmul(b[:, None, :], h if h.ndim == 3 else h[None], w.transpose(1, 2))
    if h.ndim == 2:
        return torch.matmul(h, w.transpose(1, 2)) + b[:, None, :]
    return torch.baddbmm(b[:, None, :], h, w.transpose(1, 2))


def _weight_grad(delta: torch.Tensor, h: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """δ [C, N, out] and the layer's input h [N, in] or [C, N, in]: dW [C, out, in]."""
    if h.shape[-1] == 1 and not exact:  # one input: a weighted sum beats a matmul with output size 1
        return (delta * h).sum(1)[..., None]
    if h.ndim == 2:
        return torch.matmul(delta.transpose(1, 2), h)
    return torch.bmm(delta.transpose(1, 2), h)


def update_step(
    net: Stacked,
    x: torch.Tensor,
    y: torch.Tensor,
    update: SGD | Adam,
    scale: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor | None,
    kind: str = "mse",
) -> torch.Tensor:
    """One update (`engine.updates`) on the loss `kind` (`engine.losses`) of (x, y) for
    every configuration; returns the loss [C] before it. x [N, in] (shared) or [C, N, in];
    `scale`: `losses.scale_of` the rows counted per configuration (`mask` [C, N, 1] says
    which, None: all)."""
    layers = len(net.weights)
    update.begin()
    hs, zs, h = [x], [], x
    for i, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        z = _affine(h, w, b, net.exact)
        h = _act(net.output_activation if i == layers - 1 else net.activation, z)
        if mask is not None and i < layers - 1:  # rows a configuration does not have: 0, never
            h = torch.where(mask, h, 0.0)  # inf (0·inf would be NaN in its weight gradient)
        zs.append(z)
        hs.append(h)
    loss, g = loss_and_grad(kind, h, y, scale, mask)
    for i in range(layers - 1, -1, -1):
        act = net.output_activation if i == layers - 1 else net.activation
        g = _act_grad(act, zs[i], hs[i + 1], g)
        dw, db = _weight_grad(g, hs[i], net.exact), g.sum(1)
        if i:
            g = g * net.weights[i] if net.weights[i].shape[1] == 1 else torch.bmm(g, net.weights[i])
        update.apply(2 * i, net.weights[i], dw)
        update.apply(2 * i + 1, net.biases[i], db)
    return loss


def _permutations(seeds: list[int], n: int, epoch: int, device: torch.device) -> torch.Tensor:
    """Each seed's row order for this epoch, drawn exactly as `ReplicaBatches` draws it."""
    gens = [torch.Generator().manual_seed(seed * 100_003 + epoch) for seed in seeds]
    return torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)


def train_sgd(
    net: Stacked,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: torch.Tensor,
    epochs: int,
    count: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    tail: int = 0,
    batch_size: int | None = None,
    shuffle: tuple[list[int], torch.Tensor] | None = None,
    update: SGD | Adam | None = None,
    loss: str = "mse",
) -> Trace:
    """SGD (no momentum; or `update`, e.g. `engine.updates.Adam`) on the mean squared
    error (or `loss`: "bce_logits"), every configuration at once.

    x [N, in], y [N, out] are shared; `count` [C] gives each configuration its first count[c]
    rows (None: all N; full batches only); `lr` [C]; `keep`: indices whose per-epoch loss is
    returned; `tail`: how many last losses of every configuration to return. `batch_size`
    (None: full batch) splits an epoch into updates, and the epoch's loss is the mean of its
    batches' (as Keras and the single-run path report it); `shuffle` = (seeds, each
    configuration's index into them) reorders the rows every epoch per seed. The weights
    in `net` are updated in place.
    """
    c, n = len(net), len(y)
    if count is not None and (batch_size or n) < n:
        raise ValueError("a row count per configuration needs full batches")
    rows = torch.full((c,), float(n), dtype=x.dtype, device=x.device) if count is None else count.to(x.dtype)
    scale, k = scale_of(rows, y.shape[-1]), y.shape[-1]
    mask = None if count is None else (torch.arange(n, device=x.device)[None, :] < count[:, None])[..., None]
    step = update if update is not None else SGD(lr, x.dtype)
    keep = keep if keep is not None else torch.zeros(0, dtype=torch.long, device=x.device)
    curves = torch.empty(len(keep), epochs, dtype=x.dtype, device=x.device)
    last = torch.empty(c, tail, dtype=x.dtype, device=x.device)
    first_bad = torch.zeros(c, dtype=torch.long, device=x.device)
    initial = final = peak = torch.empty(0)
    size = batch_size or n
    before = torch.empty(0)
    if size < n or shuffle is not None:  # an epoch's loss is a mean over updates: not this
        before = loss_and_grad(loss, outputs(net, x), y, scale, None)[0]
    for epoch in range(epochs):
        if size >= n and shuffle is None:
            value = update_step(net, x, y, step, scale, mask, loss)
        else:
            order = _permutations(shuffle[0], n, epoch, x.device)[shuffle[1]] if shuffle else None
            value = torch.zeros(c, dtype=x.dtype, device=x.device)
            for start in range(0, n, size):
                if order is None:
                    xb, yb = x[start : start + size], y[start : start + size]
                else:
                    idx = order[:, start : start + size]
                    xb, yb = x[idx], y[idx]
                b = float(yb.shape[-2])
                part = scale if b == n else scale_of(torch.full_like(rows, b), k)
                value = value + update_step(net, xb, yb, step, part, None, loss)
            value = value / math.ceil(n / size)
        if epoch == 0:
            initial = peak = value
            before = value if before.numel() == 0 else before
        final, peak = value, torch.maximum(peak, value)
        bad = ~torch.isfinite(value) & (first_bad == 0)
        first_bad = torch.where(bad, epoch + 1, first_bad)
        if len(keep):
            curves[:, epoch] = value[keep]
        if epoch >= epochs - tail:
            last[:, epoch - epochs + tail] = value
    return Trace(initial, final, first_bad, curves, last, peak, before)


def outputs(net: Stacked, x: torch.Tensor) -> torch.Tensor:
    """Every configuration's outputs on the shared inputs x [N, in]: [C, N, out]."""
    h, layers = x, len(net.weights)
    for i, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        h = _act(net.output_activation if i == layers - 1 else net.activation, _affine(h, w, b))
    return h
