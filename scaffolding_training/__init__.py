"""Training and data for the shipped models: the arithmetic task family, training and
calibration scripts, and a tiny random model for plumbing tests. The server never
imports this package; it needs torch and transformers (the ``cpu`` extra)."""
