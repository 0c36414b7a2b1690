"""medkit.strategies: the strategy base class and the host's reference strategies."""
