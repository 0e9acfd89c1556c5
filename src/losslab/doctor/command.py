"""`losslab doctor`: diagnose the composed config, say it, log and write what was asked.

The table goes to stdout (unless `--json -` claims it for the JSON); repair attempts go to
MLflow as `role=repair` runs; `--write-variant` writes the verified repair as a variant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig

from losslab.core.errors import LosslabError
from losslab.core.files import atomic_write
from losslab.doctor.scenario import diagnose_config, log_attempts
from losslab.doctor.variant import variant_path, write_variant


def consult(cfg: DictConfig, repair: bool, json_path: str | None, variant: str | None) -> None:
    if variant:
        variant_path(cfg, variant)  # a bad name: one line, before training
    report = diagnose_config(cfg, repair=repair or bool(variant))
    out = sys.stderr if json_path == "-" else sys.stdout
    if json_path != "-":
        print(report, flush=True)
    if report.attempts:
        logged = log_attempts(cfg, report)
        print(f"logged {logged} repair attempt(s) to MLflow ({cfg.scenario.name}, role=repair)", file=out)
    if variant:
        path = write_variant(cfg, report, variant)
        print(f"wrote {path} (run it: losslab run ... variant={variant})", file=out)
    if json_path:
        text = json.dumps(report.to_dict(), indent=2) + "\n"
        if json_path == "-":
            sys.stdout.write(text)
            return
        try:
            atomic_write(Path(json_path), text)
        except OSError as e:
            raise LosslabError(f"cannot write {json_path}: {e.strerror or e}") from None
