"""aiq package."""
