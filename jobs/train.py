"""Job 'train': see lib/cli.py for the command line and lib/train/job.py for what it does."""
import sys

from lib.cli import main

if __name__ == "__main__":
    sys.exit(main(["train"]))
