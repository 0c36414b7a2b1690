"""medkit.config: typed schemas, the isolated hydra-zen store, composition and overrides of a run's config."""
