"""`python -m mcrouter_trio` is the `mcrouter-trio` command."""

import sys

from mcrouter_trio.cli import main

sys.exit(main())
