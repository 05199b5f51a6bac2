"""`python -m benchmarks.pie`: see `benchmarks.pie.cli`."""

import sys

from .cli import main

sys.exit(main())
