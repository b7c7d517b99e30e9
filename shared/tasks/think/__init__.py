"""Tasks of category think."""
