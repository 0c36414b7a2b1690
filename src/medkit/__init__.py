"""medkit: continual self-supervised pre-training of one universal encoder (MedCoSS). Importing it stays light."""
