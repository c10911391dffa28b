"""Training algorithms: ArCHer, its baselines and its offline variants, each with its config."""
