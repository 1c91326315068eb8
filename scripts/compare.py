"""Train and evaluate several output modes side by side: ``python scripts/compare.py [overrides]``.

The same as ``waveunet compare``; see waveunet/compare.py and configs/compare.yaml.

    python scripts/compare.py experiment=compare_quick
    python scripts/compare.py experiment=compare_paper data.root=/data/musdb18
"""

import sys

from waveunet.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
