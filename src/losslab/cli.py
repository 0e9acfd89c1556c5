"""`losslab` entry points. Thin: parse, call one function, print, map errors to exit codes.

    losslab prepare scenario=linear
    losslab run scenario=linear [variant=adam] [optimizer.lr=0.05 ...] [--params params.yaml]
    losslab run -m scenario=linear variant=broken,adam,standardized   (Hydra multirun)
    losslab doctor scenario=linear variant=broken [--repair] [--json PATH]
    losslab doctor --config-dir ./my_runs scenario=mine     (a user's scenario folder)
    losslab verify [linear ...]
    losslab report
    losslab ui
    losslab server [mlflow_server=postgres_s3] [--print]

Errors the user can fix print one line on stderr and exit 2; anything else exits 1 with
one line too (the traceback only with --debug or LOSSLAB_DEBUG=1). Ctrl-C and SIGTERM stop
with one line and exit 128 + the signal (130, 143); runs of the process end KILLED.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from types import FrameType

from losslab.core.config import compose, locate
from losslab.core.data import check_data, prepare
from losslab.core.errors import Interrupted, LosslabError
from losslab.core.knobs import knob_overrides, read_params, scenarios
from losslab.core.plan import plan
from losslab.report.render import FigurePool
from losslab.report.tables import result_text, text_table
from losslab.server import serve
from losslab.tracking.uri import resolve_uri
from losslab.tracking.writer import TrackerProcess
from losslab.verify import check_scenario

# --- commands ---------------------------------------------------------------------------


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
        from losslab.pipeline import run  # (the same)
    except BaseException:
        tracker.abort()
        figures.close(cancel=True)
        raise
    diagnose = diagnose_verdict if checked.base.doctor.enabled else None
    print(result_text(run(checked, tracker, figures, diagnose), checked.root), flush=True)
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
    rows = [
        [c.scenario, c.variant, c.expected, c.observed, "PASS" if c.ok else "FAIL", c.why] for c in checks
    ]
    print(text_table(["scenario", "variant", "expected", "observed", "verdict", "why"], rows))
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    # Deferred: matplotlib (~0.8 s) is needed by this command only.
    from losslab.report.summary import write_summary

    root, _ = _where(args)
    path = write_summary(root, scenarios(root, list(args.scenarios), args.params))
    print(f"wrote {path.relative_to(root)}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    uri = resolve_uri(compose([]))
    if not uri.startswith("sqlite:"):
        print(f"runs are on {uri}: open its UI there")
        return 0
    cmd = ["mlflow", "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


def cmd_server(args: argparse.Namespace) -> int:
    return serve(args.overrides, dry_run=args.print)


# --- wiring -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other losslab error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


CONFIG_DIR = (
    "a scenario folder of your own (DIR/scenario/<name>.yaml, optional DIR/variant/<name>/); "
    "data paths are relative to it and outputs go there"
)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="losslab", description=__doc__.split("\n")[0])
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sp = sub.add_parser("prepare", help="write a scenario's data sets under data/")
    sp.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. scenario=linear")
    sp.set_defaults(func=cmd_prepare)

    sp = sub.add_parser("run", help="train a scenario's variants over its seeds and track them")
    sp.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. scenario=linear variant=adam")
    sp.add_argument("--params", help="params.yaml whose knobs (seeds, epochs_scale, accelerator) apply")
    sweep = "Hydra multirun: sweep comma lists (variant=broken,adam) on the configured launcher"
    sp.add_argument("-m", "--multirun", action="store_true", help=sweep)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("doctor", help="name the cause of a variant's rising loss, with its evidence")
    sp.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. scenario=linear variant=broken")
    sp.add_argument("--repair", action="store_true", help="try the candidate repairs over the seeds")
    sp.add_argument("--json", metavar="PATH", help="also write the report as JSON ('-': stdout only)")
    write = "write the verified repair as variant NAME (role fix) for the next run; implies --repair"
    sp.add_argument("--write-variant", metavar="NAME", help=write)
    sp.set_defaults(func=cmd_doctor)

    sp = sub.add_parser("verify", help="check the latest results against each variant's expectation")
    sp.add_argument("scenarios", nargs="*", help="default: the scenarios listed in params.yaml")
    sp.add_argument("--params", help="params file listing `scenarios` (default: params.yaml)")
    sp.set_defaults(func=cmd_verify)

    sp = sub.add_parser("report", help="write reports/summary.md from metrics/*.json")
    sp.add_argument("scenarios", nargs="*", help="default: the scenarios listed in params.yaml")
    sp.add_argument("--params", help="params file listing `scenarios` (default: params.yaml)")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("server", help="start the MLflow tracking server described by conf/mlflow_server/")
    sp.add_argument("overrides", nargs="*", help="e.g. mlflow_server=postgres_s3 mlflow_server.port=5001")
    sp.add_argument("--print", action="store_true", help="check the config and print the command only")
    sp.set_defaults(func=cmd_server)

    sp = sub.add_parser("ui", help="serve the MLflow UI on the project's sqlite store")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=5000)
    sp.set_defaults(func=cmd_ui)
    for name in ("prepare", "run", "doctor", "verify", "report"):
        sub.choices[name].add_argument("--config-dir", metavar="DIR", help=CONFIG_DIR)
    return p


def _flags_first(argv: list[str]) -> list[str]:
    """Let `-m` go anywhere after `run`, as with Hydra apps (argparse stops collecting
    positionals at the first option)."""
    if "run" not in argv:
        return argv
    i = argv.index("run") + 1
    flags = [a for a in argv[i:] if a in ("-m", "--multirun")]
    return argv[:i] + flags + [a for a in argv[i:] if a not in ("-m", "--multirun")]


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGINT/SIGTERM -> Interrupted, once: a second Ctrl-C must not cut the clean-up short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(_flags_first(list(sys.argv[1:] if argv is None else argv)))
    debug = args.debug or os.environ.get("LOSSLAB_DEBUG") == "1"
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    try:
        return args.func(args)
    except LosslabError as e:
        if debug:
            traceback.print_exc()
        print(f"losslab: error: {e}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        name = signal.Signals(signum).name
        print(
            f"losslab: stopped by {name}; runs it started end KILLED, no output was written", file=sys.stderr
        )
        return 128 + signum
    except Exception as e:
        if debug:
            traceback.print_exc()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"losslab: internal error: {type(e).__name__}: {first} (rerun with --debug)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
