"""Tasks of category watch."""
