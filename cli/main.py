"""The `videomini` console script: one typer app; each subcommand lives in its own module under cli/."""

from __future__ import annotations

import typer

from videomini import __version__
from videomini.cli.common import CommandGroup

app = typer.Typer(
    name="videomini",
    help="Long-video understanding with LLaVA-Mini: one vision token per frame.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=CommandGroup,  # a VideominiError from any command: one line, its exit code (cli/common.py)
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"videomini {__version__}")
        raise typer.Exit()


def quiet_libraries() -> None:
    """Keep third-party libraries' warnings and log notices (deprecations, Ray's start-up messages) off the
    terminal: a command prints its own results, warnings and errors, nothing else. `--verbose` skips this."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module="videomini")  # ours (e.g. "ends early: decoded up to ...") still show
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"  # one line, like our other messages
    logging.disable(logging.WARNING)  # transformers, huggingface_hub, Ray...: their errors still show


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="Also show third-party libraries' warnings and log messages."),
) -> None:
    """videomini: ask questions about long videos, index and search video libraries."""
    if not verbose:
        quiet_libraries()


def _register() -> None:
    from videomini.cli.help import plain_help

    plain_help()
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
    """The console script (expected failures end as one line: CommandGroup)."""
    from videomini import backends

    backends.defer()  # quantization libraries load only for --quantize / --kv-cache (videomini/backends.py)
    app()


if __name__ == "__main__":
    main()
