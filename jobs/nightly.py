"""``python -m jobs.nightly SOURCE --out OUT ...``: incremental scan + report + exit code."""

import sys

from deepfake_scan.cli import main

if __name__ == "__main__":
    sys.exit(main(["nightly", *sys.argv[1:]]))
