"""The ``avade`` command line (typer + rich)."""

from avade.cli.app import app, main

__all__ = ["app", "main"]
