"""Data: datasets as device-resident tensors (datasets), canvas/upload preprocessing, synthetic drawings."""
