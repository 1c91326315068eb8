"""waveunet: a GPU-first Wave-U-Net for music source separation with bounded output modes."""

__version__ = "0.1.0"
