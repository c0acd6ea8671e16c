"""`python -m pipeline.cli`: the `engagement` command."""

import sys

from pipeline.cli.main import main

sys.exit(main())
