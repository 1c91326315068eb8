"""waveunet: a GPU-first Wave-U-Net for music source separation with bounded output modes.

The Python API::

    from waveunet import Separator
    separator = Separator.from_checkpoint("runs/.../best.pt")

Its names are imported when first used, so ``import waveunet`` (and ``waveunet --version``)
does not load torch.
"""

from .version import __version__

__all__ = ["SeparationResult", "Separator", "__version__", "load_model"]


def __getattr__(name: str):
    if name in ("Separator", "SeparationResult"):
        from .separation import inference

        return getattr(inference, name)
    if name == "load_model":
        from .model.checkpoint import load_model

        return load_model
    raise AttributeError(f"module 'waveunet' has no attribute {name!r}")
