"""``python -m jobs.label SOURCE --out DEST ...``: the same arguments as ``deepfake-scan label``."""

import sys

from deepfake_scan.cli import main

if __name__ == "__main__":
    sys.exit(main(["label", *sys.argv[1:]]))
