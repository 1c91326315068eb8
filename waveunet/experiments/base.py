"""The experiments layer: the shared base of every experiment.

An experiment (``waveunet compare``: output modes side by side; ``waveunet saturation``: targets
at the bound; later ones) is typed settings -> cached runs -> a results dict -> renderers. Its
subclass of :class:`Experiment` says which files it writes, runs (reusing what an earlier call
finished) and renders; the base does what they all share:

* the output-folder guard: files of ours that an earlier call of the *same* experiment wrote
  are replaced, anything else under those names is refused;
* the machine stamp and the command line in the results;
* the thread scope: ``<experiment>.threads`` torch threads while it runs, restored after;
* the mode spec: ``{name, output, loss, overrides}`` entries, checked;
* the results JSON, in and out (:func:`waveunet.files.read_json`, strict JSON written atomically).

Each run inside an experiment is a training config composed from the command line's overrides
plus only what the experiment varies (:func:`shared_overrides` refuses the rest).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..devices import thread_scope
from ..errors import ConfigError
from ..files import read_json, write_json
from ..folders import ONLY_OURS, guard_out_dir
from ..settings.compose import group_options, override_key
from ..settings.flags import run_command


def machine_stamp() -> dict[str, Any]:
    """Where a result was measured: platform, Python, torch, CPU cores and threads, the GPU."""
    return {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# --------------------------------------------------------------------------------------------
# Modes: what an experiment varies between runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    """One compared configuration: an output preset, a loss, and (rarely) extra overrides."""

    name: str
    output: str
    loss: str
    overrides: tuple[str, ...] = ()

    def run_overrides(self) -> list[str]:
        """The overrides that make a training config this mode's."""
        return [f"output={self.output}", f"loss.name={self.loss}", *self.overrides]


def parse_modes(entries: Sequence[Any], setting: str, default_loss: str,
                extra: bool = True) -> list[Mode]:
    """``<setting>`` entries (``{name, output, loss[, overrides]}``, or an output preset's name)
    as modes; errors name the entry (``compare.modes[1].output``)."""
    if not entries:
        raise ConfigError(f"{setting}: need at least one mode, e.g. "
                          "[{name: tanh, output: tanh_difference}]")
    keys = {"name", "output", "loss", *(("overrides",) if extra else ())}
    outputs = group_options("output")
    modes = []
    for i, entry in enumerate(entries):
        where = f"{setting}[{i}]"
        entry = {"name": entry, "output": entry} if isinstance(entry, str) else dict(entry)
        unknown = sorted(set(entry) - keys)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} "
                              f"({', '.join(sorted(keys))})")
        output = entry.get("output")
        if output not in outputs:
            raise ConfigError(f"{where}.output: unknown preset {output!r} "
                              f"(available: {', '.join(outputs)})")
        name = str(entry.get("name") or output)
        if not name.replace("-", "_").replace(".", "_").isidentifier():
            raise ConfigError(f"{where}.name: {name!r} must be a plain folder name")
        overrides = entry.get("overrides") or []
        overrides = [overrides] if isinstance(overrides, str) else overrides
        modes.append(Mode(name, str(output), str(entry.get("loss") or default_loss),
                          tuple(str(o) for o in overrides)))
    names = [m.name for m in modes]
    if len(set(names)) != len(names):
        raise ConfigError(f"{setting}: names must be distinct, got {names}")
    return modes


def shared_overrides(argv: Sequence[str], per_run: Sequence[str], hint: str) -> list[str]:
    """The command line's overrides, checked: the ``per_run`` keys are the experiment's to set
    (``hint`` says where instead)."""
    for o in argv:
        if override_key(o) in per_run:
            raise ConfigError(f"{o}: {override_key(o)} is set per run by the experiment; {hint}")
    return list(argv)


# --------------------------------------------------------------------------------------------
# The base
# --------------------------------------------------------------------------------------------


class Experiment:
    """Settings -> cached runs -> a results dict -> renderers, in ``out_dir``.

    Subclasses set :attr:`command_name` (``waveunet <command_name>``, composed from
    ``configs/<command_name>.yaml``, its settings under that key), :attr:`json_name` and
    :attr:`generator` (the mark that the results JSON is ours), :attr:`report_name` (what the
    command points the user to) and :attr:`help_text`; their ``__init__(cfg, overrides,
    command)`` checks the settings, and they implement :meth:`files`, :meth:`run` and
    :meth:`render`. :meth:`main` is the command.
    """

    command_name = ""
    json_name = ""
    generator = ""
    report_name = ""
    help_text = ""

    def __init__(self, out_dir: str | os.PathLike, threads: int | None, command: str):
        self.out_dir = Path(out_dir).expanduser()
        self.threads = threads
        self.command = command

    def files(self) -> list[str]:
        """The names this experiment writes into ``out_dir`` (the guard protects them)."""
        raise NotImplementedError

    def run(self) -> dict[str, Any]:
        """Train / measure (reusing finished work) and return the results dict."""
        raise NotImplementedError

    def render(self, result: dict[str, Any]) -> None:
        """Write the figures and the markdown of ``result`` into ``out_dir``."""
        raise NotImplementedError

    def guard(self) -> None:
        """Refuse to replace files under our names that an earlier call of this experiment did
        not write; before any work."""
        out, setting = self.out_dir, f"{self.command_name}.out_dir"
        try:
            previous = read_json(out / self.json_name)  # None where there is none
            guard_out_dir(out, lambda folder: [n for n in self.files() if (folder / n).exists()],
                          ONLY_OURS, allowed=(previous or {}).get("generator") == self.generator,
                          what=f"`waveunet {self.command_name}`", setting=setting)
        except FileExistsError as exc:
            raise ConfigError(f"{setting}: {exc}") from None

    def execute(self) -> dict[str, Any]:
        """Guard, run in the thread scope, write the results JSON, render; returns the results
        (with ``out_dir``)."""
        t0 = time.perf_counter()
        self.guard()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with thread_scope(self.threads):
            stamp = machine_stamp()
            result = self.run()
        result = {"generator": self.generator, "command": self.command,
                  "written": _dt.datetime.now().isoformat(timespec="seconds"),
                  "machine": stamp, **result, "wall_s": time.perf_counter() - t0}
        write_json(self.out_dir / self.json_name, result)
        self.render(read_json(self.out_dir / self.json_name))
        return {**result, "out_dir": str(self.out_dir.resolve())}

    @classmethod
    def main(cls, argv: list[str]) -> int:
        """``waveunet <command_name> [hydra overrides]``, with Hydra's flags
        (:mod:`waveunet.settings.flags`: ``--help``, ``--cfg job`` print and run nothing)."""
        def run(cfg: Any, overrides: list[str]) -> int:
            logging.basicConfig(level=logging.INFO,
                                format="%(asctime)s %(name)s %(levelname)s: %(message)s")
            command = f"waveunet {cls.command_name} " + " ".join(overrides)
            result = cls(cfg, overrides, command).execute()
            print(f"{cls.command_name}: {Path(result['out_dir']) / cls.report_name}")
            return 0

        return run_command(cls.command_name, cls.help_text, cls.command_name, argv, run)
