"""segshift: medical image segmentation that survives a change of scanner, vendor or sequence.

The package is layered; each folder is one step of the flow described in
``docs/architecture.md``: ``data`` (domain contract, importers, phantom, slice cache),
``transforms`` (serialisable preprocessing), ``metrics`` (per-case metrics in mm),
``cli`` (the typer app). Importing it performs no I/O.
"""

__version__ = "0.1.0"
