"""Objects of a run, built from its composed config, and the values only a library can judge.

`check` tries every object on its real constructor before anything is tracked or trained:
torch's optimizers validate their own hyperparameters (betas, momentum, eps, weight
decay…), a model factory its layer sizes and initialisers, the module its options. Their
error becomes one line naming the config section, instead of a traceback mid-run.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from losslab.core.checks import epochs
from losslab.core.errors import LosslabError
from losslab.engine.datamodule import TableDataModule
from losslab.engine.models import Ensemble
from losslab.engine.module import EnsembleModule, make_trainer
from losslab.engine.runtime import quiet_lightning


def datamodule(cfg: DictConfig) -> TableDataModule:
    return instantiate(cfg.data, root=str(cfg.paths.root))


def ensemble(cfg: DictConfig) -> Ensemble:
    """One replica of the scenario's model per seed (replica i seeded with seeds[i])."""
    return Ensemble(instantiate(cfg.model), list(cfg.seeds))


def module(cfg: DictConfig, net: Ensemble) -> EnsembleModule:
    return instantiate(cfg.module, net=net)


def trainer(cfg: DictConfig, callbacks: list[pl.Callback]) -> pl.Trainer:
    return make_trainer(epochs(cfg), callbacks, OmegaConf.to_container(cfg.trainer))


def _cause(e: BaseException) -> str:
    """The library's own message (Hydra wraps it in 'Error in call to target …'), one line."""
    inner = e.__cause__ or e
    lines = [line.strip() for line in str(inner).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines[0] if lines else "")
    return f"{type(inner).__name__}: {text}".rstrip(": ")


def check(cfg: DictConfig) -> None:
    """Build the model, optimizer, scheduler, module and Trainer once, on throwaway parameters."""
    quiet_lightning()  # a Trainer announces its devices on stderr: bad input must stay one line
    where = f"{cfg.scenario.name}/{cfg.variant.name}"
    section = "model"
    try:
        net = Ensemble(instantiate(cfg.model), [0])  # seeded inside: the global RNG is untouched
        section = "optimizer"
        opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
        if cfg.get("scheduler"):
            section = "scheduler"
            instantiate(cfg.scheduler)(opt)
        section = "module"
        instantiate(cfg.module, net=net)
        section = "trainer"  # accelerator, devices, precision: Lightning says what it cannot do
        make_trainer(1, [], OmegaConf.to_container(cfg.trainer))
    except Exception as e:  # any constructor's complaint is a bad config value
        raise LosslabError(f"{where}: {section}: {_cause(e)} (check the {section}.* values)") from e
