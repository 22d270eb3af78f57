"""End-to-end jobs composed from the library: ask, index, search."""
