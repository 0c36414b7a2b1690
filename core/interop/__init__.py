"""medkit.interop: bridges to other codebases' checkpoints."""
