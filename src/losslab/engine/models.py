"""Networks: plain nn.Module factories, and the Ensemble that trains one per seed at once.

A scenario's model is an ordinary nn.Module built by a factory from its config (so a
sweep, the stability analysis or a user's own code can build it outside the Trainer).
`Ensemble` stacks one such module per seed with torch.func and runs them as one vmapped
program: every replica keeps its own parameters and gets exactly its own gradient, so
the numbers are those of separate runs, for the price of one.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

Init = Callable[[torch.Tensor], object]


def mlp(
    sizes: list[int],
    activation: nn.Module | None = None,
    output_activation: nn.Module | None = None,
    weight_init: Init | None = None,
    bias_init: Init | None = None,
) -> nn.Sequential:
    """Linear layers of the given widths, `activation` between them, `output_activation` last.

    Initialisers are in-place torch.nn.init functions (a Keras port names its defaults:
    Glorot-uniform kernels, zero biases).
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        lin = nn.Linear(n_in, n_out)
        if weight_init is not None:
            weight_init(lin.weight)
        if bias_init is not None:
            bias_init(lin.bias)
        layers.append(lin)
        last = i == len(sizes) - 2
        act = output_activation if last else activation
        if act is not None:
            layers.append(copy.deepcopy(act))
    return nn.Sequential(*layers)


class Ensemble(nn.Module):
    """One replica of `factory()` per seed, stacked along a leading dimension.

    Replica i is built right after `torch.manual_seed(seeds[i])`, so its initial weights
    are exactly those of a single run with that seed.
    """

    def __init__(self, factory: Callable[[], nn.Module], seeds: list[int]) -> None:
        super().__init__()
        self.seeds = list(seeds)
        replicas = []
        for seed in self.seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                replicas.append(factory())
        params, buffers = stack_module_state(replicas)
        self.names = list(params)
        self.stacked = nn.ParameterDict({_key(k): nn.Parameter(v) for k, v in params.items()})
        for k, v in buffers.items():
            self.register_buffer(_key(k), v)
        self.buffer_names = list(buffers)
        # The architecture without storage; kept outside the module tree so .to() skips it.
        self._template = (copy.deepcopy(replicas[0]).to("meta"),)

    @property
    def template(self) -> nn.Module:
        return self._template[0]

    def params(self) -> dict[str, torch.Tensor]:
        """Stacked parameters by their names in the replica ([replicas, *shape])."""
        return {k: self.stacked[_key(k)] for k in self.names}

    def stacked_buffers(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, _key(k)) for k in self.buffer_names}

    def replica(self, i: int) -> dict[str, torch.Tensor]:
        """Replica i's parameters (views), for functional_call on the template."""
        return {k: v[i] for k, v in self.params().items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [replicas, batch, ...] -> [replicas, batch, ...]; replica i sees only x[i]."""

        def one(p: dict, b: dict, xi: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (p, b), (xi,))

        return vmap(one)(self.params(), self.stacked_buffers(), x)

    def __repr__(self) -> str:
        return f"Ensemble({len(self.seeds)} × {self.template!r}, seeds={self.seeds})"


def _key(name: str) -> str:
    """ParameterDict keys may not contain dots."""
    return name.replace(".", "__")
