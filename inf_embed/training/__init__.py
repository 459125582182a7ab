"""Training: arguments, trainer, checkpoints and distributed helpers."""
