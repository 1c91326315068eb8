"""``python -m waveunet``: the same as the ``waveunet`` console command."""

import sys

from .cli import main

sys.exit(main())
