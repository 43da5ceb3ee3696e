"""Training: Ray Train job for the detector, GAN data generator and self-blended pseudo-fakes."""
