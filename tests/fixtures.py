"""Small images and archives made in the tests (never the shared data set)."""

import os
import shutil

import pytest

from deepfake_scan.sample import add_member, image_bytes, make_sample_archive, tar_bytes

__all__ = ["add_member", "image_bytes", "make_sample_archive", "needs_cxx", "tar_bytes"]

# torch.compile's inductor builds C++: where no compiler is installed the detector stays eager
# (tests/test_models.py checks that), and the tests of the compiled path cannot run.
needs_cxx = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler for inductor"
)
