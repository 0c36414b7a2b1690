"""medkit.storage: atomic, pickle-free files (safetensors for tensors, JSON for the rest)."""
