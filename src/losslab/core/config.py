"""Build and check the run configuration: conf/ is the single source of truth.

Everything a run does is described by one composed Hydra config (scenario + variant +
trainer + tracking + command-line overrides). This module composes it, resolves the
project paths and rejects bad values before anything is trained or tracked, so a bad
input costs one clear line instead of a half-written MLflow run.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from losslab.core.checks import epochs, validate
from losslab.core.errors import LosslabError

__all__ = [
    "available",
    "base_conf",
    "compose",
    "conf_dirs",
    "epochs",
    "locate",
    "normalise",
    "own_scenarios",
    "project_root",
    "runs_of",
    "scenario_folder",
    "variants_of",
]

ROOT_ENV = "LOSSLAB_ROOT"
# params.yaml knobs that the DVC stages pass on, and the Hydra key each one sets.
KNOBS = {"seeds": "seeds", "epochs_scale": "epochs_scale", "accelerator": "trainer.accelerator"}
# Where losslab's own conf/ lies when the package is used from its source checkout
# (src/losslab/core/config.py -> the repository root).
SHIPPED_CONF = Path(__file__).resolve().parents[3] / "conf"


def project_root(start: Path | None = None) -> Path:
    """The nearest directory (from `start` upwards) holding conf/config.yaml.

    Like git and dvc, commands work from any sub-directory of the project;
    LOSSLAB_ROOT pins it explicitly (tests, scripts run from elsewhere).
    """
    if os.environ.get(ROOT_ENV):
        root = Path(os.environ[ROOT_ENV]).resolve()
        if not (root / "conf" / "config.yaml").is_file():
            raise LosslabError(f"{ROOT_ENV}={root} has no conf/config.yaml")
        return root
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "conf" / "config.yaml").is_file():
            return d
    raise LosslabError(f"no conf/config.yaml in {here} or its parents; run inside a losslab project")


def base_conf() -> Path:
    """The conf/ a user's scenario folder is composed on (config.yaml, trainer/, tracking/):
    the enclosing losslab project's, else the one losslab was installed from."""
    try:
        return project_root() / "conf"
    except LosslabError:
        if (SHIPPED_CONF / "config.yaml").is_file():
            return SHIPPED_CONF
        raise LosslabError(
            "no losslab conf/ found: run inside a losslab project or set LOSSLAB_ROOT to one"
        ) from None


def scenario_folder(path: str | Path) -> Path:
    """A user's scenario folder (`--config-dir`): scenario/<name>.yaml, optional
    variant/<name>/*.yaml, data paths relative to it; outputs and runs go there too."""
    d = Path(path).expanduser().resolve()
    if not d.is_dir():
        raise LosslabError(f"config folder {path} does not exist (expected {path}/scenario/<name>.yaml)")
    own = own_scenarios(d)
    if not own:
        raise LosslabError(f"config folder {path} has no scenario/<name>.yaml (see examples/)")
    taken = sorted(set(own) & set(own_scenarios(base_conf())))
    if taken:
        raise LosslabError(f"{path}/scenario/{taken[0]}.yaml shadows losslab's own scenario: rename it")
    return d


def own_scenarios(folder: Path) -> list[str]:
    """The scenarios a folder itself holds (folder/scenario/*.yaml), by name."""
    return sorted(p.stem for p in (folder / "scenario").glob("*.yaml"))


def locate(config_dir: str | None, overrides: list[str]) -> tuple[Path, list[str]]:
    """The project root and the overrides a command runs with: with a `--config-dir`, the
    user's scenario folder (its only scenario chosen when the overrides name none)."""
    if not config_dir:
        return project_root(), list(overrides)
    root = scenario_folder(config_dir)
    own = own_scenarios(root)
    if any(o.startswith("scenario=") for o in overrides):
        return root, list(overrides)
    if len(own) > 1:
        raise LosslabError(f"{config_dir} holds several scenarios: name one, e.g. scenario={own[0]}")
    return root, [f"scenario={own[0]}", *overrides]


def conf_dirs(root: Path) -> list[Path]:
    """Where config groups are looked up, first match wins: a project's conf/; for a user's
    scenario folder, the folder itself, then the base conf."""
    if (root / "conf" / "config.yaml").is_file():
        return [root / "conf"]
    return [root, base_conf()]


def available(root: Path, group: str) -> list[str]:
    """Options of a config group, e.g. the scenarios or one scenario's variants."""
    found = {p.stem for d in conf_dirs(root) if (d / group).is_dir() for p in (d / group).glob("*.yaml")}
    return sorted(found)


def variants_of(root: Path, scenario: str) -> list[str]:
    """A scenario's variants: the broken original first, then its fixes by name."""
    names = available(root, f"variant/{scenario}")
    return sorted(names, key=lambda n: (n != "broken", n))


def runs_of(root: Path, scenario: str) -> list[str | None]:
    """What a whole-scenario run goes through, in order: its variants; without a `broken`
    one (a user's folder), the scenario as written (None, variant `base`) first."""
    names = variants_of(root, scenario)
    return list(names) if "broken" in names else [None, *names]


def normalise(overrides: list[str]) -> list[str]:
    """Accept `variant=adam` as short for `variant=<scenario>/adam`; in a sweep,
    `variant=broken,adam` for `variant=linear/broken,linear/adam` (one scenario only)."""
    scenario = next((o.split("=", 1)[1] for o in overrides if o.startswith("scenario=")), None)
    if not scenario or "," in scenario:
        return list(overrides)
    out = []
    for o in overrides:
        if o.startswith("variant="):
            values = o.split("=", 1)[1].split(",")
            o = "variant=" + ",".join(v if "/" in v else f"{scenario}/{v}" for v in values)
        out.append(o)
    return out


def compose(overrides: list[str], root: Path | None = None, name: str = "config") -> DictConfig:
    """Compose conf/<name>.yaml with Hydra overrides; the run config (`config`) is validated."""
    root = Path(root).resolve() if root else project_root()  # Hydra wants absolute dirs
    overrides = normalise(list(overrides))
    _check_choices(root, overrides)
    *extra, primary = conf_dirs(root)
    if extra:  # a user's scenario folder: searched after the base conf (which holds config.yaml)
        overrides = [*overrides, f"hydra.searchpath=[file://{extra[0]}]"]
    try:
        if GlobalHydra.instance().is_initialized():  # inside a Hydra app (a multirun job)
            cfg = hydra_compose(name, overrides=overrides)
        else:
            with initialize_config_dir(str(primary), version_base="1.3"):
                cfg = hydra_compose(name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise LosslabError(f"invalid override: {_first_line(e)}") from e
    OmegaConf.set_struct(cfg, False)
    cfg.paths = {"root": str(root)}
    if name == "config":
        _check_variant_belongs(cfg, overrides)
        validate(cfg)
    return cfg


def _check_variant_belongs(cfg: DictConfig, overrides: list[str]) -> None:
    """`variant=xor/adam` under `scenario=linear` would graft xor's deltas onto linear."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("variant=")]
    owner = chosen[-1].rpartition("/")[0] if chosen else cfg.scenario.name
    if owner != cfg.scenario.name:
        mine = ", ".join(variants_of(Path(cfg.paths.root), cfg.scenario.name))
        raise LosslabError(
            f"variant '{chosen[-1]}' belongs to scenario '{owner}', not '{cfg.scenario.name}' "
            f"(use scenario={owner}, or one of: {mine})"
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_choices(root: Path, overrides: list[str]) -> None:
    """Name the unknown scenario/variant and list the valid ones (Hydra's message is 20 lines)."""
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "scenario" and value not in available(root, "scenario"):
            raise LosslabError(
                f"unknown scenario '{value}' (available: {', '.join(available(root, 'scenario'))})"
            )
        if key == "variant":
            scen, _, fix = value.rpartition("/")
            if fix not in variants_of(root, scen):
                raise LosslabError(
                    f"unknown variant '{fix}' for scenario '{scen or '?'}' "
                    f"(available: {', '.join(variants_of(root, scen)) or 'none'})"
                )
