"""medkit.finetune: downstream fine-tuning, backbones, recipes, evaluation and embeddings."""
