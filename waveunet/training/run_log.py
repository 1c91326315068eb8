"""The run log: what a training run tells the outside while it trains.

Two records, written by :class:`RunLogger` in the main process only: TensorBoard (scalars, audio,
figures, hparams) and ``metrics.jsonl``, one strict-JSON record per line (``kind``: ``train``,
``health``, ``epoch``, ``valid``, ``resume``; every record has its global ``step``). The file's
one reader is :func:`read_metrics` (a line cut by a kill is skipped); :func:`truncate_metrics`
cuts it back to a checkpoint's step when a killed run is resumed, so no step is logged twice.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import torch

from ..errors import DiskFullError, no_space_error, space_checked
from ..files import atomic_write_text, to_jsonable

METRICS_NAME = "metrics.jsonl"


def read_metrics(run_dir: Path) -> list[dict]:
    """A run's ``metrics.jsonl`` records, in order (none where there is no file yet; a line cut
    by a kill is skipped)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


class RunLogger:
    """What a run tells the outside: TensorBoard scalars, audio, figures and hparams, and
    ``metrics.jsonl``.

    Writes only in the main process and only with a run folder; otherwise every call is a no-op.
    Nothing is created before the first write, so a run that stops before it leaves no file.
    A resumed run sets :attr:`purge_step` (its checkpoint's step + 1): TensorBoard then drops
    the events the first attempt logged after that checkpoint. A write that fails for lack of
    space is a :class:`~waveunet.errors.DiskFullError` naming the file.
    """

    def __init__(self, run_dir: Path | None, enabled: bool = True):
        self.run_dir = run_dir if enabled else None
        self.purge_step: int | None = None
        self.writer = None
        self._jsonl = None

    @property
    def tensorboard_dir(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "tensorboard"

    @property
    def _events_file(self) -> Path | None:
        """The TensorBoard events file being written (its folder if it cannot be told)."""
        try:  # SummaryWriter does not expose the file's name
            return Path(self.writer.file_writer.event_writer._file_name)
        except AttributeError:
            return self.tensorboard_dir

    def _tensorboard(self):
        if self.writer is None and self.run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            _quiet_tensorboard_thread_on_full_disk()
            with space_checked(self.tensorboard_dir):
                self.writer = SummaryWriter(str(self.tensorboard_dir),
                                            purge_step=self.purge_step)
        return self.writer

    def scalars(self, values: dict[str, float], step: int) -> None:
        writer = self._tensorboard()
        if writer is not None:
            with space_checked(self._events_file):
                for key, value in values.items():
                    writer.add_scalar(key, value, step)

    def audio(self, tag: str, wave: torch.Tensor, step: int, sample_rate_hz: int) -> None:
        """Mono audio (TensorBoard's audio is one channel: give a downmix or one channel)."""
        writer = self._tensorboard()
        if writer is not None:
            with space_checked(self._events_file):
                writer.add_audio(tag, wave, step, sample_rate=sample_rate_hz)

    @property
    def enabled(self) -> bool:
        """Whether anything is written (figures are worth drawing)."""
        return self.run_dir is not None

    def figure(self, tag: str, fig: Any, step: int) -> None:
        """A matplotlib figure as an image; the figure is closed either way."""
        writer = self._tensorboard()
        if writer is not None:
            with space_checked(self._events_file):
                writer.add_figure(tag, fig, step, close=True)
        else:
            import matplotlib.pyplot as plt

            plt.close(fig)

    def hparams(self, config: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """The run's config (nested, flattened to dotted keys) as TensorBoard hparams, with
        ``metrics`` logged as scalars under the same names in this run (where TensorBoard's
        HParams dashboard reads them); lists and nulls become their JSON text, and torch's
        writer stores booleans as 0 / 1."""
        writer = self._tensorboard()
        if writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        from ..settings.compose import flatten

        flat = {k: v if isinstance(v, bool | int | float | str) else json.dumps(v)
                for k, v in flatten(config).items()}
        with space_checked(self._events_file):
            for summary in hparams(flat, metrics):
                writer.file_writer.add_summary(summary, step)
        self.scalars(metrics, step)

    def record(self, record: dict[str, Any]) -> None:
        """One line of ``metrics.jsonl`` (strict JSON: NaN becomes null)."""
        if self.run_dir is None:
            return
        path = self.run_dir / METRICS_NAME
        with space_checked(path):
            if self._jsonl is None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._jsonl = open(path, "a", buffering=1)  # noqa: SIM115
            self._jsonl.write(json.dumps(to_jsonable(record), allow_nan=False) + "\n")

    def close(self, failing: bool = False) -> None:
        """Flush and close; ``failing`` (the run is stopping on an error): a failure to flush
        (a full disk) is not raised over that error."""
        if self.run_dir is None:
            return
        for name, path in (("writer", self._events_file if self.writer else None),
                           ("_jsonl", self.run_dir / METRICS_NAME)):
            closer = getattr(self, name)
            if closer is None:
                continue
            setattr(self, name, None)
            try:
                with space_checked(path):
                    closer.close()
            except (OSError, DiskFullError):
                if not failing:
                    raise


_TENSORBOARD_HOOKED = False


def _quiet_tensorboard_thread_on_full_disk() -> None:
    """TensorBoard writes events in a thread and raises its write errors again in the calling
    thread, where they become one DiskFullError line; without this hook the thread would
    also print its own traceback of an out-of-space error."""
    global _TENSORBOARD_HOOKED
    if _TENSORBOARD_HOOKED:
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        ours = type(args.thread).__name__ == "_AsyncWriterThread"  # tensorboard's writer
        if not (ours and no_space_error(args.exc_value) is not None):
            previous(args)

    threading.excepthook = hook
    _TENSORBOARD_HOOKED = True


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the records of ``path`` (``metrics.jsonl``) up to ``step``, atomically; a line cut
    by a kill goes too. Returns how many lines were dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) > step:
            dropped += 1
        else:
            kept.append(line + "\n")
    if dropped or not path.read_bytes().endswith(b"\n"):
        with space_checked(path):
            atomic_write_text(path, "".join(kept))
    return dropped
