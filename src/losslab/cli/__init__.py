"""`losslab` entry points. Thin: parse, call one function, print, map errors to exit codes.

    losslab prepare scenario=linear
    losslab run scenario=linear [variant=adam] [optimizer.lr=0.05 ...] [--params params.yaml]
    losslab run -m scenario=linear variant=broken,adam,standardized   (Hydra multirun)
    losslab doctor scenario=linear variant=broken [--repair] [--json PATH]
    losslab doctor --config-dir ./my_runs scenario=mine     (a user's scenario folder)
    losslab verify [linear ...] [--junit reports/junit.xml]
    losslab list [--config-dir DIR]                          (scenarios and their variants)
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
import sys
import traceback
from types import FrameType

from losslab.cli.commands import (
    cmd_doctor,
    cmd_list,
    cmd_map,
    cmd_prepare,
    cmd_report,
    cmd_run,
    cmd_server,
    cmd_ui,
    cmd_verify,
)
from losslab.core.errors import Interrupted, LosslabError

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
    quiet = "no progress on stderr (a bar per variant on a terminal, else a line per finished variant)"
    sp.add_argument("-q", "--quiet", action="store_true", help=quiet)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("map", help="a stability map: every lr × one knob × seed trained as one program")
    sp.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. scenario=linear map.lr.num=400")
    parts = "train the map as map.parts Hydra jobs on the launcher (hydra/launcher=...), then merge"
    sp.add_argument("-m", "--multirun", action="store_true", help=parts)
    sp.set_defaults(func=cmd_map)

    sp = sub.add_parser("list", help="the scenarios and their variants: role, expectation, description")
    sp.add_argument("scenarios", nargs="*", help="default: every scenario (of --config-dir, if given)")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("doctor", help="name the cause of a variant's rising loss, with its evidence")
    sp.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. scenario=linear variant=broken")
    sp.add_argument("--repair", action="store_true", help="try the candidate repairs over the seeds")
    sp.add_argument("--json", metavar="PATH", help="also write the report as JSON ('-': stdout only)")
    write = "write the verified repair as variant NAME (role fix) for the next run; implies --repair"
    sp.add_argument("--write-variant", metavar="NAME", help=write)
    sp.set_defaults(func=cmd_doctor)

    for name, func, text in (
        ("verify", cmd_verify, "check the latest results against each variant's expectation"),
        ("report", cmd_report, "write reports/summary.md from results/*.json and plots/"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("scenarios", nargs="*", help="default: the scenarios listed in params.yaml")
        sp.add_argument("--params", help="params file listing `scenarios` (default: params.yaml)")
        sp.set_defaults(func=func)
    junit = "also write the checks as JUnit XML (one test case per scenario × variant), for CI"
    sub.choices["verify"].add_argument("--junit", metavar="PATH", help=junit)

    sp = sub.add_parser("server", help="start the MLflow tracking server described by conf/mlflow_server/")
    sp.add_argument("overrides", nargs="*", help="e.g. mlflow_server=postgres_s3 mlflow_server.port=5001")
    sp.add_argument("--print", action="store_true", help="check the config and print the command only")
    sp.set_defaults(func=cmd_server)

    sp = sub.add_parser("ui", help="serve the MLflow UI on the project's sqlite store")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=5000)
    sp.set_defaults(func=cmd_ui)
    for name in ("prepare", "run", "map", "list", "doctor", "verify", "report"):
        sub.choices[name].add_argument("--config-dir", metavar="DIR", help=CONFIG_DIR)
    return p


def _flags_first(argv: list[str]) -> list[str]:
    """Let `-m` go anywhere after `run` or `map`, as with Hydra apps (argparse stops
    collecting positionals at the first option)."""
    command = next((a for a in argv if a in ("run", "map")), None)
    if command is None:
        return argv
    i = argv.index(command) + 1
    own = ("-m", "--multirun", "-q", "--quiet")
    flags = [a for a in argv[i:] if a in own]
    return argv[:i] + flags + [a for a in argv[i:] if a not in own]


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
        said = "runs it started end KILLED, no output was written"
        said = "the UI server with it" if args.command == "ui" else said
        print(f"losslab: stopped by {name}; {said}", file=sys.stderr)
        return 128 + signum
    except Exception as e:
        if debug:
            traceback.print_exc()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"losslab: internal error: {type(e).__name__}: {first} (rerun with --debug)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
