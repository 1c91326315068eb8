"""The ``waveunet`` console command: one entry point, one module per subcommand.

Each subcommand module exposes ``main(argv: list[str]) -> int``; modules are
imported only when their command runs, so ``waveunet info`` does not pay for
TensorBoard or museval imports.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from . import __version__
from .errors import WaveUNetError

COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("waveunet.info", "print a model preset's shapes and parameter count as JSON"),
    "synth": ("waveunet.synth", "write a generated MUSDB18-HQ-layout dataset"),
    "train": ("waveunet.train", "train a separation model (Hydra overrides)"),
    "evaluate": ("waveunet.evaluate", "score a checkpoint or estimates: SDR, clipping, report"),
    "saturation": ("waveunet.saturation", "the saturation experiment: targets at the bound"),
    "separate": ("waveunet.separate", "separate songs into stems with a trained checkpoint"),
    "compare": ("waveunet.compare", "train and evaluate several output modes side by side"),
    "import-tf": ("waveunet.import_tf", "convert the original Wave-U-Net's TensorFlow checkpoints"),
}


class ExamplesHelpFormatter(argparse.HelpFormatter):
    """argparse's help with the description wrapped as usual and an epilog that starts with
    ``examples:`` printed as written (one command per line)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: waveunet <command> [args...]   (or python -m waveunet)",
             "       waveunet --version", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'waveunet <command> --help' for a command's options and examples."]
    return "\n".join(lines)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be: the same clean-up runs."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def handle_sigterm_like_ctrl_c() -> object:
    """Make SIGTERM raise :class:`Terminated` (a KeyboardInterrupt) in the main thread.

    Returns the handler it replaced (None outside the main thread, where none can be set).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _terminate)


def report_stop(command: str, exc: KeyboardInterrupt, hint: str = "") -> int:
    """Say on stderr how ``command`` stopped, Ctrl-C (``interrupted``, exit 130) or SIGTERM
    (``terminated (SIGTERM)``, exit 143), with ``hint`` (how to continue) after it; returns
    the exit status. Every command stops with these words."""
    if isinstance(exc, Terminated):
        print(f"waveunet {command}: terminated (SIGTERM){hint}", file=sys.stderr)
        return 128 + signal.SIGTERM
    print(f"waveunet {command}: interrupted{hint}", file=sys.stderr)
    return 130


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


if __name__ == "__main__":
    # Run as ``python -m waveunet.cli``: through the package's module, not this __main__ copy,
    # so the commands (train's report_stop) and the handler share one Terminated class.
    from waveunet.cli import main as package_main

    sys.exit(package_main())
