"""``python -m proxy`` is ``layers-proxy``."""

import sys

from proxy.cli import main

sys.exit(main())
