"""Where a command computes: which torch device (``auto``, ``cpu``, ``cuda``, ``cuda:N`` or any
other device this torch build and machine can use, checked once with one-line errors naming the
option it came from), and how many CPU threads torch uses meanwhile (:func:`thread_scope`).
Training (the builder), separation, evaluation and the experiments resolve their device and
set their threads here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .errors import ConfigError

__all__ = ["resolve_device", "thread_scope"]


@contextmanager
def thread_scope(threads: int | None) -> Iterator[None]:
    """``threads`` torch CPU threads inside (None: leave them), the caller's number after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str | torch.device = "auto", *, local_rank: int = 0,
                   setting: str = "device") -> torch.device:
    """``'auto'``: CUDA when available (GPU ``local_rank`` under torchrun), else the CPU.

    A device this machine cannot use (``'cuda'`` without a GPU, ``'mps'`` off a Mac, ``'meta'``)
    is a ConfigError naming ``setting``, the option it came from.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"{setting}: unknown {device!r} (use auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "meta":  # a tensor there has a shape and no data: nothing to separate
        raise ConfigError(f"{setting}: {device!r} holds no data, it cannot run the model "
                          "(use auto, cpu, cuda or cuda:N)")
    if dev.type not in ("cpu", "cuda"):
        try:  # mps, xpu, ...: this torch build and machine may not have them
            torch.empty(0, device=dev)
        except Exception as exc:  # NotImplementedError, AssertionError, ImportError, ...
            raise ConfigError(f"{setting}: {device!r} is not available in this torch build "
                              "or on this machine (use auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{setting}: {device!r} asked for, but no CUDA GPU is available (use cpu)"
        )
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda" and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"{setting}: {device!r} asked for, but only "
                          f"{torch.cuda.device_count()} CUDA GPU(s) are visible")
    return dev
