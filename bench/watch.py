"""What watching costs: a plain loop with `losslab.watch` and a Lightning fit with
`losslab.DoctorCallback`, each against the same training without them.

Two models: a small MLP (2-32-32-1, 8,192 rows, batch 64) and one past a million
parameters (256-1024-1024-1-wide MLP, 1.3M parameters, batch 256). Each setting runs
--repeat rounds interleaved (watched and bare alternate, the same seed); prints the median
seconds and the ratio watched / bare, measured in one run. Target: ≤ 1.3× everywhere.

    .venv/bin/python bench/watch.py [--repeat 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import losslab

MODELS = {
    "small MLP (1.2k params)": (2, [32, 32], 8192, 64),
    "MLP 1.3M params": (256, [1024, 1024], 4096, 256),
}


def _data(d_in: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, d_in, generator=g)
    w = torch.randn(d_in, 1, generator=g) / d_in**0.5
    return x, torch.tanh(x @ w)


def _model(d_in: int, widths: list[int]) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in zip([d_in, *widths], widths, strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 1))


def plain(spec: tuple, epochs: int, watched: bool) -> float:
    d_in, widths, rows, bs = spec
    x, y = _data(d_in, rows)
    model = _model(d_in, widths)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.MSELoss()
    w = losslab.watch(model, opt, loss_fn) if watched else None
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, rows, bs):
            opt.zero_grad()
            loss_fn(model(x[i : i + bs]), y[i : i + bs]).backward()
            opt.step()
    if w is not None:
        w.report()
    return time.perf_counter() - start


def lightning(spec: tuple, epochs: int, watched: bool) -> float:
    import pytorch_lightning as pl  # Deferred: only the Lightning half of the bench needs it

    d_in, widths, rows, bs = spec

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _model(d_in, widths)

        def training_step(self, batch: tuple, _i: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    x, y = _data(d_in, rows)
    loader = DataLoader(TensorDataset(x, y), batch_size=bs)
    callbacks = [losslab.DoctorCallback(verbose=False)] if watched else []
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        default_root_dir="/tmp/losslab-bench-watch",
    )  # fmt: skip
    module = Module()
    start = time.perf_counter()
    trainer.fit(module, loader)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print(f"{'door':<10} {'model':<24} {'bare s':>8} {'watched s':>10} {'ratio':>6}   ({args.repeat} rounds)")
    for door, fn in (("watch", plain), ("callback", lightning)):
        for name, spec in MODELS.items():
            fn(spec, 1, True)  # warm-up: imports, first-call costs
            bare, watched = [], []
            for _ in range(args.repeat):
                bare.append(fn(spec, args.epochs, False))
                watched.append(fn(spec, args.epochs, True))
            b, w = statistics.median(bare), statistics.median(watched)
            print(f"{door:<10} {name:<24} {b:8.2f} {w:10.2f} {w / b:6.2f}", flush=True)


if __name__ == "__main__":
    main()
