"""Serving the warehouse to readers: the versioned response cache (the read API builds on it)."""
