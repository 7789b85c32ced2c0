"""Training: the config and presets, the loop, resume checkpoints, runs from start to finish, background jobs."""
