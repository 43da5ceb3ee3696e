"""``python -m jobs.train ...``: the same arguments as ``deepfake-scan train``."""

import sys

from deepfake_scan.train.commands import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], prog="python -m jobs.train"))
