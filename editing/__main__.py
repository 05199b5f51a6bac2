import os
import sys

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from .cli import main  # noqa: E402

sys.exit(main())
