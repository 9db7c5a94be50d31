"""What a run raises when training itself fails; light, so the CLI can catch it without importing torch."""


class TrainingDiverged(RuntimeError):
    """Non-finite losses, gradients or updates: the run stopped before anything bad was saved."""
