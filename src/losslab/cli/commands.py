"""The bodies of `losslab`'s commands: parse nothing, call one function, print.

Each takes the parsed arguments and returns the exit code; errors propagate to `main`
(in `losslab.cli`), which maps them to one line and an exit code.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from losslab.core.catalogue import catalogue
from losslab.core.config import compose, locate
from losslab.core.data import check_data, prepare
from losslab.core.errors import LosslabError
from losslab.core.files import atomic_write
from losslab.core.grid import map_config
from losslab.core.knobs import knob_overrides, read_params, scenarios
from losslab.core.plan import plan
from losslab.report.junit import junit_xml
from losslab.report.render import FigurePool
from losslab.report.tables import catalogue_text, checks_text, result_text
from losslab.server import serve
from losslab.tracking.uri import resolve_uri
from losslab.tracking.writer import TrackerProcess
from losslab.verify import check_scenario


def _where(args: argparse.Namespace) -> tuple[Path, list[str]]:
    return locate(args.config_dir, list(getattr(args, "overrides", [])))


def cmd_prepare(args: argparse.Namespace) -> int:
    root, overrides = _where(args)
    for path in prepare(compose(overrides, root)):
        print(f"wrote {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    root, given = _where(args)
    overrides = knob_overrides(read_params(args.params)) + given
    if args.multirun:
        if args.config_dir:
            raise LosslabError(
                "--config-dir does not combine with -m yet: run each variant, or copy the folder into conf/"
            )
        # Deferred like the pipeline below: Hydra's launchers, torch and Lightning (~6 s).
        from losslab.sweeps import multirun

        return multirun(overrides)
    checked = plan(overrides, root)  # bad input is answered here, before the heavy imports
    # The tracking writer and the figure worker start first: MLflow and matplotlib load in
    # their processes while torch and Lightning load in this one.
    tracker, figures = TrackerProcess.open(checked.base), FigurePool()
    try:
        # Deferred: torch and Lightning cost ~6 s to import, and every other command (and
        # every bad input above) is answered without them.
        from losslab.doctor.scenario import diagnose_verdict  # the doctor reads each verdict
        from losslab.engine.progress import Progress  # (the same)
        from losslab.pipeline import run  # (the same)
    except BaseException:
        tracker.abort()
        figures.close(cancel=True)
        raise
    diagnose = diagnose_verdict if checked.base.doctor.enabled else None
    result = run(checked, tracker, figures, diagnose, Progress(quiet=args.quiet))
    print(result_text(result, checked.root), flush=True)
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    root, overrides = _where(args)
    given = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    launcher = [o for o in overrides if o not in given]
    if launcher and not args.multirun:
        raise LosslabError(f"'{launcher[0]}' sets Hydra's launcher, which only -m uses: losslab map -m ...")
    if args.multirun and args.config_dir:
        raise LosslabError("--config-dir does not combine with -m yet: copy the folder into conf/")
    cfg, grid = map_config(given, root)  # bad input is answered here, before torch loads
    if not (Path(cfg.paths.root) / cfg.data.path).exists():  # a map of a scenario not in the
        for path in prepare(cfg):  # pipeline's `scenarios`: its data, made as `prepare` makes it
            print(f"wrote {path}")
    check_data(cfg)
    tracker = TrackerProcess.open(cfg)
    try:
        # Deferred: torch (~2 s) only once the grid is known to be sound.
        from losslab.engine.runtime import BATCHED_MMAP_THRESHOLD, prepare_process, steady_malloc
        from losslab.mapping.track import track  # (the same)

        if args.multirun:
            # Deferred: losslab.sweeps loads the run pipeline and MLflow (~3 s) a plain map never needs.
            from losslab.sweeps.maps import map_multirun
    except BaseException:
        tracker.abort()
        raise
    prepare_process(grid.accelerator)
    steady_malloc(BATCHED_MMAP_THRESHOLD, trim=4 * BATCHED_MMAP_THRESHOLD)
    result = map_multirun(cfg, grid, given, launcher, tracker) if args.multirun else track(cfg, grid, tracker)
    (agree, far), (ended, _) = result.agreement(), result.agreement(by="outcome")
    conv, s = float(result.shares["converged"].mean()), grid.scenario
    print(f"{s}: {grid.size:,} trainings in {result.seconds:.1f} s; {conv:.0%} of them converged")
    print(f"lr > 2/λ_max agrees with 'the loss rises at some epoch' in {agree:.1%} and with 'the run "
          f"ends unstable' in {ended:.1%} of the {far:,} trainings off their seed's line")  # fmt: skip
    print(f"wrote maps/{s}.csv and maps/{s}.png; MLflow experiment {s}-map")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    root, _ = _where(args)
    print(catalogue_text(catalogue(root, list(args.scenarios))))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    root, overrides = _where(args)
    cfg = compose(overrides, root)
    check_data(cfg, nonfinite="keep")  # a bad override or data file: one line, before torch loads
    # Deferred: the doctor trains with torch (~2 s to import); bad input is answered above.
    from losslab.doctor.command import consult

    consult(cfg, args.repair, args.json, args.write_variant)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    root, _ = _where(args)
    checks = [
        c for name in scenarios(root, list(args.scenarios), args.params) for c in check_scenario(root, name)
    ]
    print(checks_text(checks))
    if args.junit:
        atomic_write(Path(args.junit), junit_xml(checks))
        print(f"wrote {args.junit}")
    return 1 if any(not c.ok for c in checks) else 0


def cmd_report(args: argparse.Namespace) -> int:
    # Deferred: matplotlib (~0.8 s) is needed by this command only.
    from losslab.report.summary import write_summary

    root, _ = _where(args)
    path = write_summary(root, scenarios(root, list(args.scenarios), args.params))
    print(f"wrote {path.relative_to(root)} and metrics/summary.json")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """The MLflow UI on the project's store: one light process (one worker), in a session
    of its own so that it stops with this command (Ctrl-C, SIGTERM) and leaves no orphan;
    it prints where each scenario's runs are (MLflow's own home is its GenAI landing)."""
    uri = resolve_uri(compose([]))
    if not uri.startswith("sqlite:"):
        print(f"runs are on {uri}: open its UI there")
        return 0
    # Deferred: MLflow (~1 s) is needed by this command only, to list the experiments.
    from losslab.tracking.store import experiments

    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow) if mlflow.exists() else "mlflow", "ui", "--backend-store-uri", uri]
    cmd += ["--host", args.host, "--port", str(args.port), "--workers", "1"]
    base = f"http://{args.host}:{args.port}"
    for name, exp_id in experiments(uri):
        print(f"{name}: {base}/#/experiments/{exp_id}")
    print(f"all experiments: {base}/#/experiments   (Ctrl-C stops the UI)", flush=True)
    # No GenAI job runner: a UI over runs needs the web server only.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:  # stopped by Ctrl-C or SIGTERM: take the server down with us
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def cmd_server(args: argparse.Namespace) -> int:
    return serve(args.overrides, dry_run=args.print)
