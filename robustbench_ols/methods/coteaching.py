"""coteaching (being written)."""
