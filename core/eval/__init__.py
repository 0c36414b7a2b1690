"""medkit.eval: held-out pretext loss, probes, the stage x modality matrices, continual metrics, plots and reports."""
