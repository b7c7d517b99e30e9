"""Tasks of category find."""
