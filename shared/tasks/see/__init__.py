"""Tasks of category see."""
