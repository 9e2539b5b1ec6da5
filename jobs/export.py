"""Job 'export': see lib/cli.py for the command line and lib/export.py for what it does."""
import sys

from lib.cli import main

if __name__ == "__main__":
    sys.exit(main(["export"]))
