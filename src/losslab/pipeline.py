"""One scenario, top to bottom: plan -> check -> fit -> judge -> track and report.

The failure policy lives here, once: a config that cannot train ends its runs FAILED and
is one line; an interrupt (Ctrl-C, SIGTERM) ends every run of this process KILLED and
touches no output; outputs are written only after every variant finished.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from omegaconf import DictConfig

from losslab.core.checks import epochs
from losslab.core.criteria import Expectations
from losslab.core.errors import Interrupted, LosslabError
from losslab.core.files import atomic_write, diagnosis_path, output_paths, results_path
from losslab.core.plan import Plan
from losslab.core.results import ScenarioResult, Verdict
from losslab.engine import build
from losslab.engine.datamodule import TableDataModule
from losslab.engine.progress import Progress
from losslab.engine.runtime import prepare_process
from losslab.fit import Prepared, groups, prepare, records, train
from losslab.judge import judge
from losslab.report.outputs import write_data_outputs
from losslab.report.render import FigurePool
from losslab.report.series import scenario_title, series
from losslab.tracking.log import log_verdict, run_name, run_tags
from losslab.tracking.uri import loss_chart_url
from losslab.tracking.writer import TrackerProcess

# (config, verdict) -> the doctor's report on that variant: an object with cause,
# confidence, to_dict() and markdown(). Passed in by the caller (the doctor sits beside
# this module in the house, not below it).
Diagnose = Callable[[DictConfig, Verdict], Any]


def run(
    plan: Plan,
    tracker: TrackerProcess | None = None,
    figures: FigurePool | None = None,
    diagnose: Diagnose | None = None,
    progress: Progress | None = None,
) -> ScenarioResult:
    """Every planned variant over its seeds; the scenario's DVC outputs when it ran them all.

    `diagnose`: each variant's verdict is handed to the doctor; its cause and confidence
    are tagged on the variant's run (`diagnosis.cause`, `diagnosis.confidence`, artifact
    `diagnosis.md`) and written to reports/<scenario>.diagnosis.json with the outputs.

    `tracker` and `figures` may be started by the caller before it imports this module, so
    that MLflow and matplotlib load in their processes while torch loads in this one; this
    function owns them from here on and closes them whatever happens.

    `progress`: a bar per variant on a terminal, a line per finished variant on stderr
    (default); `Progress(quiet=True)` says nothing.
    """
    progress = progress or Progress()
    tracker = tracker or TrackerProcess.open(plan.base)
    figures = figures or FigurePool()
    try:
        prepare_process(plan.base.trainer.accelerator)
        for cfg in plan.configs:
            build.check(cfg)  # the libraries judge what only they know, before any run exists
        modules = [build.datamodule(cfg) for cfg in plan.configs]
        for dm in modules:
            dm.setup()
        experiment = tracker.experiment(plan.scenario)  # an unusable store fails here, before training
        result = ScenarioResult(plan.scenario, experiment_id=experiment, ui_command=tracker.ui_command())
        pending: list[tuple[str, Future[bytes]]] = []
        run_of = _Runs(plan, tracker, experiment, progress)
        verdicts: dict[int, Verdict] = {}
        # Each group prepared right before it trains: preparing all first fragments the heap.
        for group in groups(plan.configs, modules):
            ready = [run_of.prepare(plan.configs[i], modules[i]) for i in group]
            for i, verdict in zip(group, run_of.train(ready), strict=True):
                verdicts[i] = verdict
                cfg = plan.configs[i]
                if diagnose is not None:
                    result.diagnoses[verdict.name] = _diagnosis(diagnose, cfg, verdict, tracker)
                said = _said(verdict, result.diagnoses.get(verdict.name))
                progress.done(f"{plan.scenario}/{verdict.name}", said)
                title = f"{plan.scenario} / {verdict.name}"
                pending.append((verdict.name, figures.submit("variant_png", series(verdict), title)))
                pending = _finish(tracker, pending, wait=False)
        result.verdicts = [verdicts[i] for i in sorted(verdicts)]  # the plan's order, as before
        result.diagnoses = {
            v.name: result.diagnoses[v.name] for v in result.verdicts if v.name in result.diagnoses
        }
        if plan.whole:
            _write_outputs(result, plan, figures)
        _finish(tracker, pending, wait=True)
        runs = tracker.close()
    except BaseException as e:
        with contextlib.suppress(Exception):  # the writer may be gone already
            if isinstance(e, (Interrupted, KeyboardInterrupt)):
                tracker.end_all("KILLED")
        tracker.abort()
        figures.close(cancel=True)
        raise
    figures.close()
    parents = [runs[v.name].parent for v in result.verdicts if v.name in runs]
    result.compare_url = tracker.compare_url(experiment, parents)
    result.chart_url = loss_chart_url(tracker.uri, tracker.ui_url, experiment, parents)
    return result


def _said(verdict: Verdict, diagnosis: dict | None) -> str:
    """A finished variant in one line: its outcomes against the expectation, the diagnosis."""
    c = verdict.check
    text = f"{c.observed} (expected {verdict.expectations.expected}: {'PASS' if c.ok else 'FAIL'})"
    return text + (f", diagnosed {diagnosis['cause']}" if diagnosis else "")


class _Runs:
    """Each variant's MLflow runs around its fit: started (RUNNING) right before its group
    trains, named after the variant and what the user overrode; FAILED with one line when
    its config cannot train."""

    def __init__(self, plan: Plan, tracker: TrackerProcess, experiment: str, progress: Progress) -> None:
        self.plan, self.tracker, self.experiment, self.progress = plan, tracker, experiment, progress

    def _start(self, cfg: DictConfig) -> Expectations:
        exp = Expectations.of(cfg)
        tags = run_tags(cfg, exp, self.plan.changed)
        self.tracker.start(exp.name, self.experiment, run_name(exp, self.plan.changed), tags, list(cfg.seeds))
        return exp

    def _failed(self, cfgs: list[DictConfig], e: Exception, started: bool) -> LosslabError:
        for cfg in cfgs:
            if not started:
                self._start(cfg)
            self.tracker.end(cfg.variant.name, "FAILED")
        lines = str(e).strip().splitlines()
        detail = f"{type(e).__name__}: {lines[0] if lines else ''}"
        return LosslabError(f"training {cfgs[0].scenario.name}/{cfgs[0].variant.name} failed: {detail}")

    def prepare(self, cfg: DictConfig, dm: TableDataModule) -> Prepared:
        """The variant built and checked (`fit.prepare`), its pre-fit findings said."""
        label = f"{self.plan.scenario}/{cfg.variant.name}"

        def warn(text: str) -> None:
            print(f"losslab: WARNING [{label}]: {text}", file=sys.stderr, flush=True)

        try:
            return prepare(cfg, dm, warn=warn, callbacks=self.progress.start(label, epochs(cfg)))
        except Exception as e:  # a config that composes but cannot train (shapes, dtypes, …)
            raise self._failed([cfg], e, started=False) from e

    def train(self, group: list[Prepared]) -> list[Verdict]:
        """Fit a group (`fit.train`) and judge each variant; its runs get the verdicts."""
        cfgs = [p.cfg for p in group]
        exps = [self._start(cfg) for cfg in cfgs]
        self.progress.clock()
        try:
            train(group)
        except Exception as e:
            raise self._failed(cfgs, e, started=True) from e
        verdicts = []
        for p, exp in zip(group, exps, strict=True):
            verdict = judge(records(p), exp)
            log_verdict(self.tracker, p.cfg, verdict)
            verdicts.append(verdict)
        return verdicts


def _diagnosis(diagnose: Diagnose, cfg: DictConfig, verdict: Verdict, tracker: TrackerProcess) -> dict:
    report = diagnose(cfg, verdict)
    tags = {"diagnosis.cause": report.cause, "diagnosis.confidence": report.confidence}
    tracker.log(verdict.name, tags=tags)
    tracker.artifact_text(verdict.name, report.markdown(), "diagnosis.md")
    return report.to_dict()


def _finish(
    tracker: TrackerProcess, pending: list[tuple[str, Future[bytes]]], wait: bool
) -> list[tuple[str, Future[bytes]]]:
    """Attach each rendered loss figure to its variant's parent run and end the runs."""
    left = []
    for key, fut in pending:
        if wait or fut.done():
            tracker.artifact_bytes(key, fut.result(), "loss_curve.png")
            tracker.end(key)
        else:
            left.append((key, fut))
    return left


def _write_outputs(result: ScenarioResult, plan: Plan, figures: FigurePool) -> None:
    """metrics, plot data and figure, written back to back once the figure is rendered."""
    title = scenario_title(plan.scenario, result.verdicts)
    png = figures.submit("scenario_png", [series(v) for v in result.verdicts], title).result()
    write_data_outputs(result, plan.root, list(plan.base.scenario.get("key") or []))
    atomic_write(output_paths(plan.root, plan.scenario)[2], png)
    result.outputs = [*output_paths(plan.root, plan.scenario), results_path(plan.root, plan.scenario)]
    if result.diagnoses:
        path = diagnosis_path(plan.root, plan.scenario)
        atomic_write(path, json.dumps(result.diagnoses, indent=2, allow_nan=False) + "\n")
        result.outputs.append(path)
