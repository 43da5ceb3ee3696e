"""``python -m jobs.synth ...``: the same arguments as ``deepfake-scan synth``."""

import sys

from deepfake_scan.train.commands import main

if __name__ == "__main__":
    sys.exit(main(["synth", *sys.argv[1:]], prog="python -m jobs.synth"))
