"""Data: the domain contract, readers, importers, the phantom, the slice cache."""
