"""medkit.engine: the pre-training loop, step plans, schedules, distributed helpers, checkpoints and continuation."""
