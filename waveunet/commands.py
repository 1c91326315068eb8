"""What every command shares: its help's layout, and how it says that it stopped.

The dispatcher (:mod:`waveunet.cli`) imports each command by name; the commands import this
module, never the dispatcher, so no command depends on the table that lists it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


class ExamplesHelpFormatter(argparse.HelpFormatter):
    """argparse's help with the description wrapped as usual and an epilog that starts with
    ``examples:`` printed as written (one command per line)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


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
