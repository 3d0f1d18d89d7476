"""posterflow tasks."""
