"""posterflow storage."""
