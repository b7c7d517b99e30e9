"""Tasks of category get."""
