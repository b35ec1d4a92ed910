"""The engine: configuration, the training loop, precision, DDP, checkpoints and logs."""
