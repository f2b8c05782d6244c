"""`python -m airollout` is the `airollout` command."""

import sys

from airollout.cli import main

sys.exit(main())
