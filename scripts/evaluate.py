#!/usr/bin/env python
"""Evaluate a checkpoint or estimates on disk: the same command as `waveunet evaluate`."""

import sys

from waveunet.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
