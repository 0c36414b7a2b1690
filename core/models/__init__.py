"""medkit.models: the universal encoder, masking, the legacy switch and building a run's model."""
