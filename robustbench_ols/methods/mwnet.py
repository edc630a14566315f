"""mwnet (being written)."""
