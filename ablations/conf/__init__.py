"""The Hydra config tree of `python -m ablations.train` (yaml only; see config.yaml)."""
