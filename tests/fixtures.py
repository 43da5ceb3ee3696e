"""Small images and archives made in the tests (never the shared data set)."""

from deepfake_scan.sample import add_member, image_bytes, make_sample_archive, tar_bytes

__all__ = ["add_member", "image_bytes", "make_sample_archive", "tar_bytes"]
