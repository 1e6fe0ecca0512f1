"""`python -m tensorchat` runs the command line."""

import sys

from tensorchat.cli import main

sys.exit(main())
