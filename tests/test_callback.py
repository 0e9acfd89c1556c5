"""`losslab.DoctorCallback` inside Lightning fits of LightningModules written here (not ours),
with a real Trainer and, for the logger, a real sqlite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import losslab


class Regressor(pl.LightningModule):
    """A small MLP regressor, as a user would write it."""

    def __init__(self, lr: float = 0.05, left_out: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
        self.lr, self.left_out = lr, left_out

    def training_step(self, batch: tuple, _idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = self.net[0].parameters() if self.left_out else self.parameters()
        return torch.optim.SGD(params, lr=self.lr)


def _loader(flat: bool = False, nan_rows: tuple[int, ...] = ()) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, generator=g)
    y = x[:, 0] - 0.5 * x[:, 1]
    for r in nan_rows:
        x[r, 1] = float("nan")
    return DataLoader(TensorDataset(x, y if flat else y[:, None]), batch_size=32)


def _fit(tmp_path: Path, module: pl.LightningModule, loader: DataLoader, epochs: int = 10, **kw) -> tuple:
    torch.manual_seed(0)
    cb = losslab.DoctorCallback(**kw)
    trainer = pl.Trainer(
        max_epochs=epochs, callbacks=[cb], default_root_dir=tmp_path, logger=False, accelerator="cpu",
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, loader)
    return cb, trainer


def test_healthy_fit_says_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    cb, _ = _fit(tmp_path, Regressor(), _loader())
    assert (cb.diagnosis.cause, cb.diagnosis.findings) == ("healthy", [])
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("losslab")]
    assert len(said) == 1 and said[0].startswith("losslab doctor: healthy (")
    assert json.loads((tmp_path / "diagnosis.json").read_text())["cause"] == "healthy"


def test_too_high_lr_is_lr_too_high_against_sgds_bound(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cb, _ = _fit(tmp_path, Regressor(lr=3.0), _loader())
    d = cb.diagnosis
    assert (d.cause, d.confidence) == ("lr_too_high", "medium")
    assert d.findings[0].evidence["ratio"] > 1 and d.findings[0].evidence["lambda_max"] > 0


def test_targets_of_shape_n_is_shape_broadcast(tmp_path: Path) -> None:
    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        cb, _ = _fit(tmp_path, Regressor(), _loader(flat=True), epochs=3)
    assert (cb.diagnosis.cause, cb.diagnosis.confidence) == ("shape_broadcast", "high")
    assert "(32, 1)" in cb.diagnosis.findings[0].summary and "(32,)" in cb.diagnosis.findings[0].summary


def test_nan_rows_stop_the_fit_at_the_first_bad_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cb, trainer = _fit(tmp_path, Regressor(), _loader(nan_rows=(70,)), epochs=5, stop_on_nonfinite=True)
    d = cb.diagnosis
    assert (d.cause, d.confidence) == ("nonfinite_data", "high")
    assert d.findings[0].evidence == {"rows": 1.0, "step": 2.0}  # row 70: the third batch of 32
    assert trainer.global_step == 3  # stopped right there: 3 of the epoch's 8 batches


def test_a_layer_left_out_is_parameters_not_updated(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cb, _ = _fit(tmp_path, Regressor(left_out=True), _loader(), epochs=3)
    assert (cb.diagnosis.cause, cb.diagnosis.confidence) == ("parameters_not_updated", "high")
    assert "net.2.weight" in cb.diagnosis.findings[0].summary


class Touchy(Regressor):
    """A training_step that refuses to run twice on one batch (so the doctor's probe fails)."""

    calls = 0

    def on_train_batch_start(self, batch: tuple, idx: int) -> None:
        self.calls = 0

    def training_step(self, batch: tuple, idx: int) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("called twice on one batch")
        return super().training_step(batch, idx)


def test_the_callback_never_fails_the_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    _, trainer = _fit(tmp_path, Touchy(), _loader(), epochs=2)
    assert trainer.current_epoch == 2  # the fit ran to its end
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("losslab")]
    assert err == ["losslab.DoctorCallback: stopped watching (RuntimeError: called twice on one batch)"]


def test_mlflow_logger_gets_the_tags_and_diagnosis_md(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="user-run", tracking_uri=uri, save_dir=str(tmp_path / "artifacts"))
    torch.manual_seed(0)
    cb = losslab.DoctorCallback()
    trainer = pl.Trainer(
        max_epochs=10, callbacks=[cb], logger=logger, accelerator="cpu", default_root_dir=tmp_path,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Regressor(lr=3.0), _loader())
    run = mlflow.MlflowClient(uri).get_run(logger.run_id)
    assert run.data.tags["diagnosis.cause"] == "lr_too_high"
    assert run.data.tags["diagnosis.confidence"] == "medium"
    local = mlflow.artifacts.download_artifacts(run_id=logger.run_id, artifact_path="diagnosis.md",
                                                tracking_uri=uri, dst_path=str(tmp_path / "dl"))  # fmt: skip
    assert Path(local).read_text().startswith("# Diagnosis: lr_too_high (confidence medium)")
    assert json.loads(cb.path.read_text())["cause"] == "lr_too_high"
