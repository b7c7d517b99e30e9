"""Tasks of category transform."""
