"""The `videomini` console script: one typer app; each subcommand lives in its own module under cli/."""

from __future__ import annotations

import sys

import typer

from videomini import __version__

app = typer.Typer(
    name="videomini",
    help="Long-video understanding with LLaVA-Mini: one vision token per frame.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"videomini {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """videomini: ask questions about long videos, index and search video libraries."""


def _register() -> None:
    # Each module of this package adds its commands to `app` (`@app.command()`); importing them all here
    # makes `videomini --help` list every subcommand. Modules import heavy libraries lazily, inside commands.
    import importlib
    import pkgutil

    import videomini.cli as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("main",) and not module.name.startswith("_"):
            importlib.import_module(f"videomini.cli.{module.name}")


_register()


def main() -> None:
    """The console script. A storage error no command caught still ends as one line, never a traceback."""
    from videomini.storage import LibraryError

    try:
        app()
    except LibraryError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
