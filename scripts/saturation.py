"""The saturation experiment (targets at the bound): ``python scripts/saturation.py [overrides]``.

The same as ``waveunet saturation``; see waveunet/saturation.py and configs/saturation.yaml, e.g.

    python scripts/saturation.py saturation.steps=500 saturation.out_dir=runs/saturation-long
"""

import sys

from waveunet.cli import main

if __name__ == "__main__":
    sys.exit(main(["saturation", *sys.argv[1:]]))
