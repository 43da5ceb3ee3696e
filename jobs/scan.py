"""``python -m jobs.scan SOURCE --out OUT ...``: the same arguments as ``deepfake-scan scan``."""

import sys

from deepfake_scan.cli import main

if __name__ == "__main__":
    sys.exit(main(["scan", *sys.argv[1:]]))
