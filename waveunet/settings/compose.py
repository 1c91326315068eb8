"""Hydra configuration: where the config tree lives, how commands compose it, and when two
configs mean the same run.

Every command that takes ``key=value`` overrides composes its config here, so an unknown
preset or key, or a value of the wrong type, fails the same way everywhere: a
:class:`ConfigError` naming the setting. The typed settings (:mod:`waveunet.settings.schema`) are
registered in Hydra's ConfigStore as the group ``schema``, which the primary configs place
under their keys (``- schema@trainer: trainer``).

:func:`config_differences` and :func:`meaning_changes` are the one rule for "was this run made
with other settings?": a comparison refuses to mix in a run folder trained otherwise, and
reuses an evaluation only when its settings are the same; a resumed run may differ only in
:data:`RESUME_ALLOWED` (:func:`waveunet.training.run_folder.resume_differences`).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from ..errors import ConfigError
from .schema import SCHEMAS

for _name, _schema in SCHEMAS.items():
    ConfigStore.instance().store(group="schema", name=_name, node=_schema)


def config_dir() -> Path:
    """The ``configs/`` tree: packaged inside the wheel, or the repository's in a checkout."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "configs"
    if packaged.is_dir():
        return packaged
    repo = package.parent / "configs"
    if repo.is_dir():
        return repo
    raise ConfigError(f"cannot find the configs/ directory (looked in {packaged} and {repo})")


def group_options(group: str) -> list[str]:
    """Names of the presets in one config group, e.g. ``group_options('model')``."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml") if p.stem != "base")


def compose(config_name: str, overrides: Sequence[str] = (), *,
            return_hydra_config: bool = False) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with command-line style overrides (with Hydra's
    own ``hydra`` node too when ``return_hydra_config``: its group choices, its help).

    The config tree is read once per process: the same composition asked again (``waveunet
    compare`` composes each run's config more than once, ``import-tf`` every model preset) is
    a copy of the first (Hydra takes 0.1-0.3 s a composition). Interpolations stay unresolved
    in the copy, so ``${oc.env:...}`` is read when the value is used, as before."""
    return copy.deepcopy(_composed(config_name, tuple(overrides), return_hydra_config))


@functools.lru_cache(maxsize=512)
def _composed(config_name: str, overrides: tuple[str, ...],
              return_hydra_config: bool) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides),
                                return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(explain_hydra_error(exc)) from exc
    finally:
        GlobalHydra.instance().clear()
    return cfg


def override_key(override: str) -> str:
    """The key (or group) a command-line override sets: ``data.root`` of ``+data.root=x``."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def explain_hydra_error(exc: Exception) -> str:
    """Turn Hydra's composition errors into one line that names the setting or lists the
    valid choices."""
    cause = exc if getattr(exc, "full_key", None) else exc.__cause__
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if text.startswith("Could not override") and any("+" in line for line in lines[1:]):
        key = text.split("'")[1] if "'" in text else "?"
        return f"unknown setting '{key}' (no such key in the config)"
    if getattr(cause, "full_key", None) and getattr(cause, "msg", None):
        return f"{cause.full_key}: {str(cause.msg).strip().splitlines()[0]}"
    for group in ("model", "output", "data", "optim", "trainer", "experiment"):
        if f"'{group}/" in text:
            options = ", ".join(group_options(group))
            return f"{text} (available {group} presets: {options})"
    return text


# --------------------------------------------------------------------------------------------
# When two configs mean the same run
# --------------------------------------------------------------------------------------------


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config (dicts) as {dotted key: value}."""
    if isinstance(config, Mapping):
        out: dict[str, Any] = {}
        for k, v in config.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: config}


def config_differences(configs: Mapping[str, Mapping]) -> dict[str, dict[str, Any]]:
    """{dotted key: {name: value}} for every key whose resolved value differs between configs
    (a key one of them lacks counts as ``"<missing>"``)."""
    flat = {name: flatten(c) for name, c in configs.items()}
    keys = sorted(set().union(*(f.keys() for f in flat.values())))
    diff = {}
    for k in keys:
        values = {name: f.get(k, "<missing>") for name, f in flat.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            diff[k] = values
    return diff


# What may differ when a run is continued (``trainer.resume``): how long, how visibly, where and
# with how many threads or loader processes it runs, where the run folders and the decoded-audio
# cache (a copy of the data, made again where it is missing) are. Everything
# else changes what the run means (data, model, loss, seed, optimiser, ...). ``data.root`` (and
# a combined config's dataset roots) may differ too when the tracks there are the same
# (:func:`waveunet.training.run_folder.resume_differences`).
RESUME_ALLOWED = (
    "trainer.max_epochs", "trainer.progress", "trainer.log_every_steps",
    "trainer.checkpoint_every_steps", "trainer.device", "trainer.threads", "trainer.resume",
    "data.workers", "data.cache_dir", "runs_root",
)


def meaning_changes(saved: Mapping, now: Mapping, allowed: Sequence[str] = (),
                    equivalent: Mapping[str, Callable[[Any, Any], bool]] | None = None
                    ) -> list[str]:
    """The dotted keys in which ``now`` differs from ``saved`` in a way that changes what a run
    means: every difference except those under an ``allowed`` key (``trainer.max_epochs``,
    ``trainer.progress``, ``data.workers``, ...: how long, how visibly or where it runs), and
    those whose key is in ``equivalent`` and whose function, called with (saved value, value
    now), says the two mean the same (``data.root``: a dataset that moved).

    The one rule for reusing or resuming a run made with ``saved``: callers refuse when the
    list is not empty and name its first keys.
    """
    equivalent = equivalent or {}

    def is_allowed(key: str) -> bool:
        return any(key == a or key.startswith(a + ".") for a in allowed)

    changes = config_differences({"saved": saved, "now": now})
    return [k for k, values in changes.items() if not is_allowed(k)
            and not (k in equivalent and equivalent[k](values["saved"], values["now"]))]
