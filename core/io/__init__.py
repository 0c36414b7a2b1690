"""medkit.core.io: readers, caches and sample views shared by the modality plugins."""
