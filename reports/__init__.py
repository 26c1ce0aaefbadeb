"""Regenerate the paper's tables and figures from a sweep's results store."""
