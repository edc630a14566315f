"""arazo (being written)."""
