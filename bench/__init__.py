"""`make bench`: edgebundle against its baselines, measured side by side in one run."""
