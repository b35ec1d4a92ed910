"""Entry point of the ``segshift`` console script.

Each command module exposes ``register(app)``. User errors (:class:`SegshiftError`) and
operating-system errors (permission, read-only folder, full disk: :class:`OSError`) are
printed as one ``error: ...`` line on stderr with exit status 2; nothing else is caught.
"""

from __future__ import annotations

import sys

import typer

from segshift.errors import SegshiftError

COMMAND_MODULES = (
    "import_",
    "check",
    "phantom",
    "evaluate",
    "train",
    "adapt",
    "predict",
    "testset",
    "attack",
    "bench",
    "demo",
    "benchmark",
    "report",
    "export",
)


def build_app() -> typer.Typer:
    """Build the app (imports command modules lazily, so ``import segshift`` stays light)."""
    import importlib

    app = typer.Typer(
        name="segshift",
        help="Segmentation that survives a change of scanner, vendor or MR sequence.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for mod in COMMAND_MODULES:
        importlib.import_module(f"segshift.cli.{mod}").register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for user errors and usage errors)."""
    app = build_app()
    try:
        app(args=argv, prog_name="segshift")  # standalone: usage errors exit 2 via SystemExit
    except SegshiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # permission denied, read-only folder, disk full: the path and the reason, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
