"""``python -m cfexp.serving``."""

import sys

from cfexp.serving.cli import main

sys.exit(main())
