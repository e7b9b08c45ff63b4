"""``python -m bot.cli``: the ``remediation-bot`` command."""

import sys

from bot.cli.main import main

sys.exit(main())
