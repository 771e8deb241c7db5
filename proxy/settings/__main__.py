"""``python -m proxy.settings --markdown | --update FILE``: the settings reference."""

import sys

from proxy.settings.reference import main

sys.exit(main())
