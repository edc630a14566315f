"""pencil (being written)."""
