"""medkit.testing: the contract suites plugin tests subclass, and synthetic data for them."""
