"""Job 'pipeline': every stage in order under one run id (ingest ... evaluate)."""
import sys

from lib.cli import STAGES, main

if __name__ == "__main__":
    sys.exit(main(list(STAGES), job="pipeline"))
