"""``python -m jobs.evaluate --model M --real R --fake F --out DIR ...``: the same arguments as
``deepfake-scan evaluate``."""

import sys

from deepfake_scan.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
