"""Hydra configuration: where the config tree lives and how commands compose it.

Every command that takes ``key=value`` overrides composes its config here, so an
unknown preset or key fails the same way everywhere: a :class:`ConfigError`
naming the setting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError


def config_dir() -> Path:
    """The ``configs/`` tree: packaged inside the wheel, or the repository's in a checkout."""
    packaged = Path(__file__).resolve().parent / "configs"
    if packaged.is_dir():
        return packaged
    repo = Path(__file__).resolve().parent.parent / "configs"
    if repo.is_dir():
        return repo
    raise ConfigError(f"cannot find the configs/ directory (looked in {packaged} and {repo})")


def group_options(group: str) -> list[str]:
    """Names of the presets in one config group, e.g. ``group_options('model')``."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml") if p.stem != "base")


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with command-line style overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(explain_hydra_error(exc)) from exc
    finally:
        GlobalHydra.instance().clear()
    return cfg


def explain_hydra_error(exc: Exception) -> str:
    """Turn Hydra's composition errors into one line that lists the valid choices."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if text.startswith("Could not override") and any("+" in line for line in lines[1:]):
        key = text.split("'")[1] if "'" in text else "?"
        return f"unknown setting '{key}' (no such key in the config; to add a new key use +{key}=...)"
    for group in ("model", "output", "data", "optim", "trainer", "experiment"):
        if f"'{group}/" in text:
            options = ", ".join(group_options(group))
            return f"{text} (available {group} presets: {options})"
    return text


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
