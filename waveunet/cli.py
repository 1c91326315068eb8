"""The ``waveunet`` console command: one entry point, one module per subcommand.

Each subcommand module exposes ``main(argv: list[str]) -> int``; modules are
imported only when their command runs (by name, from :data:`COMMANDS`), so
``waveunet info`` does not pay for TensorBoard or museval imports. What the
commands share (the help layout, how a command says it stopped) is in
:mod:`waveunet.commands`, which they import instead of this module.
"""

from __future__ import annotations

import importlib
import signal
import sys

from .commands import handle_sigterm_like_ctrl_c, report_stop
from .errors import WaveUNetError
from .version import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("waveunet.model.info", "print a model preset's shapes and parameter count as JSON"),
    "synth": ("waveunet.data.synth", "write a generated MUSDB18-HQ-layout dataset"),
    "train": ("waveunet.training.train", "train a separation model (Hydra overrides)"),
    "evaluate": ("waveunet.evaluation.evaluate",
                 "score a checkpoint or estimates: SDR, clipping, report"),
    "saturation": ("waveunet.experiments.saturation",
                   "the saturation experiment: targets at the bound"),
    "separate": ("waveunet.separation.separate",
                 "separate songs into stems with a trained checkpoint"),
    "compare": ("waveunet.experiments.compare",
                "train and evaluate several output modes side by side"),
    "import-tf": ("waveunet.tf.import_tf",
                  "convert the original Wave-U-Net's TensorFlow checkpoints"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: waveunet <command> [args...]   (or python -m waveunet)",
             "       waveunet --version", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'waveunet <command> --help' for a command's options and examples."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"waveunet {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"waveunet: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"waveunet: command '{name}' is not available in this version", file=sys.stderr)
            return 2
        raise
    previous = handle_sigterm_like_ctrl_c()
    try:
        return int(module.main(rest) or 0)
    except WaveUNetError as exc:
        print(f"waveunet {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        return report_stop(name, exc)
    finally:
        if previous is not None:  # a caller in this process (a test) gets its own back
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # python -m waveunet.cli
    sys.exit(main())
