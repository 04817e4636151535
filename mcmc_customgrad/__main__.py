"""``python -m mcmc_customgrad``: the command line, the same as ``mcmc-customgrad``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
