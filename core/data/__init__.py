"""medkit.data: readers, transforms, caches, labels, splits and the 2D/3D modality bases plugins build on."""
