"""Job 'pipeline': every stage in order under one run id (ingest ... evaluate), then audit."""
import sys

from lib.cli import PIPELINE, main

if __name__ == "__main__":
    sys.exit(main(list(PIPELINE), job="pipeline"))
