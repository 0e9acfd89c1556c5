"""Hydra multirun: many `losslab run` jobs on a launcher (joblib locally, SLURM, Ray)."""

from losslab.sweeps.multirun import InitStore, multirun

__all__ = ["InitStore", "multirun"]
