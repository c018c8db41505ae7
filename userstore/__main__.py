"""``python -m userstore``: the command line, replaying the seed notebook by default."""

import sys

from userstore.cli import main

sys.exit(main())
