"""The typer command-line app; one module per command, each only parses and calls the library."""
