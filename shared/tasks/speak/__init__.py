"""Tasks of category speak."""
