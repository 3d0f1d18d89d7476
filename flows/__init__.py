"""posterflow flows."""
