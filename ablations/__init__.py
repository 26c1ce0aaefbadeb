"""The Hydra sweep harness: ``python -m ablations.train -m downsample=... model=... seed=...``."""
