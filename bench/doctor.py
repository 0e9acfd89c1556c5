"""Benchmark: what a diagnosis costs next to training the same config once.

For each scenario's broken original (the config door: `losslab doctor scenario=<s>
variant=broken`), measured in one run on this machine, in one process:
1. training: `losslab.fit.fit(cfg)`, every seed of the variant as the pipeline trains it;
2. diagnosis: `diagnose_config(cfg, repair=False)` (decisive checks, the run as given over
   the seeds, curvature, counterfactuals);
3. repair: `diagnose_config(cfg, repair=True)` minus the diagnosis (candidates trained over
   the seeds until one works).
Prints diagnosis/training (target <= 2) and repair/training (target <= 6). scratch_backprop's
broken original is a wrong hand-written gradient: decisive, with no config repair (its
"repair" column is the second, identical diagnosis minus the first: ~0).

    .venv/bin/python bench/doctor.py [--seeds 0,1,2,3,4] [--scenarios linear,xor]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from losslab.core.config import compose
from losslab.doctor.scenario import diagnose_config
from losslab.engine.runtime import quiet_lightning
from losslab.fit import fit

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--scenarios", default="linear,xor,relu_head,scratch_backprop")
    args = ap.parse_args()
    quiet_lightning()
    head = ["scenario", "train s", "diagnose s", "repair s", "diag/train", "repair/train", "cause"]
    print("{:<16} {:>8} {:>10} {:>9} {:>10} {:>12}  {}".format(*head))
    for scenario in args.scenarios.split(","):
        cfg = compose([f"scenario={scenario}", "variant=broken", f"seeds=[{args.seeds}]"], ROOT)
        train, _ = _timed(fit, cfg)
        diag, report = _timed(diagnose_config, cfg, repair=False)
        both, _ = _timed(diagnose_config, cfg, repair=True)
        fix = max(both - diag, 0.0)
        row = (scenario, train, diag, fix, diag / train, fix / train, report.cause)
        print("{:<16} {:8.2f} {:10.2f} {:9.2f} {:10.2f} {:12.2f}  {}".format(*row))


if __name__ == "__main__":
    main()
