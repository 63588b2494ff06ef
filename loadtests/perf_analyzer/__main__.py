"""`python -m loadtests.perf_analyzer install [--venv .venv] [--force]`: see install.py."""

import sys

from loadtests.perf_analyzer.install import main

if __name__ == "__main__":
    sys.exit(main())
