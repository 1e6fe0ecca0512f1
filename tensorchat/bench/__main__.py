"""`python -m tensorchat.bench`: the load generator without the `tensorchat` wrapper."""

import sys

from tensorchat.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
