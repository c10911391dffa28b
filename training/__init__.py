"""Rollouts, behaviour cloning and (later) the ArCHer trainer and its baselines."""
