"""Tasks of category hear."""
