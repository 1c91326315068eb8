#!/usr/bin/env python
"""Train a Wave-U-Net: the same Hydra app as `waveunet train` (usable with torchrun)."""

import sys

from waveunet.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
