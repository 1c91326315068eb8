"""Hydra's command-line flags for every ``key=value`` command, in Hydra's style.

Every ``key=value`` command (``train``, ``evaluate``, ``compare``, ``saturation``, ``info``)
composes its configuration with Hydra's compose API (:func:`waveunet.settings.compose.compose`: no
change
of directory, one-line errors) through :func:`run_command`; only ``waveunet train -m`` hands
the command line to Hydra's own app, for its sweepers and launchers. This module gives all of
them the same flags, so a user who knows one knows them all:

* ``--help`` / ``-h``: the command's usage and examples, then Hydra's part: the config groups with
  their options (the chosen one marked) and the config composed with the overrides given;
* ``--cfg job|hydra|all`` (``-c``), with ``--resolve`` and ``--package`` / ``-p``: print the
  composed config (or Hydra's node, or both) and exit, as Hydra does; nothing is run or written;
* ``--config-dir`` / ``-cd DIR``: a folder of the user's own presets, searched first (Hydra's
  ``hydra.searchpath``, which may be given as an override too);
* ``--hydra-help``: these flags.

Shell completion is not offered: Hydra's helper completes a program with one config, not
``waveunet <command>``, so ``--shell-completion`` / ``-sc`` is refused with one line. A word
without ``=`` that names a preset gets "did you mean model=m4?". Every problem is a
:class:`ConfigError`: one line, exit status 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from .compose import compose, config_dir, group_options

CFG_CHOICES = ("job", "hydra", "all")
COMPLETION = ("--shell-completion", "-sc")
NO_COMPLETION = ("shell completion is not offered: Hydra's completion helper completes a "
                 "program with one config, not `waveunet <command>`")

FLAGS_HELP = """== Flags ==
--help,-h : the command's usage and examples, its config groups and the composed config
--hydra-help : these flags
--cfg,-c job|hydra|all : print the composed config (job), Hydra's node (hydra) or both, and exit
--resolve : resolve interpolations in what --cfg or --help prints
--package,-p PACKAGE : print only this part of the config (e.g. -p data)
--config-dir,-cd DIR : a folder of your own presets (DIR/data/my_data.yaml: data=my_data),
    searched before the package's (the same as hydra.searchpath=[file://DIR])
--multirun,-m : (train) a sweep: one run per combination of comma-separated values
Overrides: key=value (model.levels=6), group=option (data=musdb_hq), +key=value, ~key.
Shell completion is not offered."""


@dataclass
class Flags:
    """What a command line asks for besides running: help, a config print, and the overrides."""

    help: bool = False
    hydra_help: bool = False
    cfg: str | None = None
    resolve: bool = False
    package: str | None = None
    overrides: list[str] = field(default_factory=list)


def search_path(folder: str, flag: str) -> str:
    """The override that adds ``folder`` (``--config-dir``) to Hydra's config search path."""
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"{flag} {folder}: no such folder of configs")
    return f"hydra.searchpath=[file://{path}]"


def preset_groups(word: str) -> list[str]:
    """The config groups that have a preset named ``word`` (``m4`` -> ``["model"]``)."""
    groups = sorted(p.name for p in config_dir().iterdir() if p.is_dir() and p.name != "hydra")
    return [g for g in groups if word in group_options(g)]


def not_an_override(word: str, command: str) -> ConfigError:
    """The error for a bare word: "did you mean model=m4?" when it names a preset."""
    groups = preset_groups(word)
    if groups:
        guesses = " or ".join(f"{g}={word}" for g in groups)
        return ConfigError(f"'{word}' is not a key=value override; did you mean {guesses}?")
    return ConfigError(f"'{word}' is not a key=value override (e.g. model=m4 data.root=DIR; "
                       f"waveunet {command} --help lists the settings)")


def parse(argv: Sequence[str], command: str) -> Flags:
    """Split a ``key=value`` command line into Hydra's flags and the overrides."""
    flags, args = Flags(), list(argv)
    while args:
        arg = args.pop(0)
        name, _, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg in ("-h", "--help"):
            flags.help = True
        elif arg == "--hydra-help":
            flags.hydra_help = True
        elif arg == "--resolve":
            flags.resolve = True
        elif name in ("-c", "--cfg", "-p", "--package"):
            if not inline and not args:
                raise ConfigError(f"{name} needs a value"
                                  + (f" ({' | '.join(CFG_CHOICES)})" if "c" in name else ""))
            value = inline or args.pop(0)
            if name in ("-c", "--cfg"):
                if value not in CFG_CHOICES:
                    raise ConfigError(f"{name} {value}: choose from {', '.join(CFG_CHOICES)}")
                flags.cfg = value
            else:
                flags.package = value
        elif name in ("-cd", "--config-dir"):
            if not inline and not args:
                raise ConfigError(f"{name} needs a folder of configs")
            flags.overrides.append(search_path(inline or args.pop(0), name))
        elif name in COMPLETION:
            raise ConfigError(NO_COMPLETION)
        elif arg.startswith("-"):
            raise ConfigError(f"unknown flag {arg} (waveunet {command} takes key=value overrides "
                              "and --help, --hydra-help, --cfg, --resolve, --package, "
                              "--config-dir)")
        elif "=" not in arg:
            raise not_an_override(arg, command)
        else:
            flags.overrides.append(arg)
    return flags


def _groups(config_name: str, overrides: Sequence[str]) -> str:
    """Hydra's "== Configuration groups ==" lines: the groups this config composes, each with
    its presets and the one chosen now."""
    choices = compose(config_name, overrides, return_hydra_config=True).hydra.runtime.choices
    lines = []
    for key, chosen in sorted(choices.items()):
        group = key.split("@", 1)[0]
        if group.startswith("hydra/") or group == "schema":
            continue
        options = ", ".join(group_options(group))
        lines.append(f"{key}: {options} (now: {chosen if chosen is not None else 'none'})")
    return "\n".join(lines)


def _select(cfg: DictConfig, package: str | None) -> object:
    if package is None:
        return cfg
    node = OmegaConf.select(cfg, package, default=None)
    if node is None:
        raise ConfigError(f"--package {package}: no such key in the composed config")
    return node


def _yaml(node: object, resolve: bool) -> str:
    if isinstance(node, DictConfig | list) or OmegaConf.is_config(node):
        return OmegaConf.to_yaml(node, resolve=resolve)
    return f"{node}\n"


def help_text(usage: str, config_name: str, flags: Flags,
              compose_job: Callable[[list[str]], DictConfig]) -> str:
    """``--help``: the usage, then Hydra's part (groups, composed config, footer)."""
    job = _select(compose_job(flags.overrides), flags.package)
    return (f"{usage.rstrip()}\n\n== Configuration groups ==\n"
            "Compose your configuration from those groups (group=option)\n\n"
            f"{_groups(config_name, flags.overrides)}\n\n== Config ==\n"
            "Override anything in the config (foo.bar=value)\n\n"
            f"{_yaml(job, flags.resolve)}\n"
            "Powered by Hydra (https://hydra.cc)\nUse --hydra-help to view the flags\n")


def cfg_text(config_name: str, flags: Flags,
             compose_job: Callable[[list[str]], DictConfig]) -> str:
    """``--cfg job|hydra|all``: the composed config, Hydra's node, or both."""
    parts = []
    if flags.cfg in ("job", "all"):
        parts.append(_yaml(_select(compose_job(flags.overrides), flags.package), flags.resolve))
    if flags.cfg in ("hydra", "all"):
        full = compose(config_name, flags.overrides, return_hydra_config=True)
        hydra = OmegaConf.create({"hydra": OmegaConf.to_container(full.hydra, resolve=False)})
        parts.append(_yaml(_select(hydra, flags.package), False))
    return "\n".join(parts)


def run_command(command: str, usage: str, config_name: str, argv: Sequence[str],
                run: Callable[[DictConfig, list[str]], int],
                compose_job: Callable[[list[str]], DictConfig] | None = None) -> int:
    """A ``key=value`` command: answer Hydra's flags, or compose the config and ``run`` it.

    Args:
        command: the subcommand's name (for messages).
        usage: its usage and examples (the head of ``--help``).
        config_name: its primary config (``configs/<config_name>.yaml``).
        run: ``run(cfg, overrides) -> exit status``.
        compose_job: how the command composes its config from the overrides (default
            :func:`waveunet.settings.compose.compose` of ``config_name``).
    """
    flags = parse(argv, command)
    compose_job = compose_job or (lambda overrides: compose(config_name, overrides))
    if flags.hydra_help:
        print(FLAGS_HELP)
        return 0
    if flags.help:
        print(help_text(usage, config_name, flags, compose_job))
        return 0
    if flags.cfg is not None:
        print(cfg_text(config_name, flags, compose_job), end="")
        return 0
    if flags.package is not None or flags.resolve:
        raise ConfigError("--package and --resolve go with --cfg or --help")
    return run(compose_job(flags.overrides), flags.overrides)
