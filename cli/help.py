"""Help that reads as a person writes a command line. typer prints a value's type as Python spells it (`<bool>`
beside a flag, `<list[str]>`, `<float>`) and a required argument in braces (`{VIDEO QUESTION}...`); here a flag
shows no type, a value its kind in capitals (NUMBER, INTEGER, TEXT, PATH, or the option's own metavar, e.g.
ID_OR_PATH), a usage line names its arguments plainly (`VIDEO QUESTION...`), and a long word in a help text
(a hub id as a default) folds onto the next line rather than ending in "…". `plain_help()` installs this
once, from videomini.cli.main."""

from __future__ import annotations

import re
from typing import Any

# Python's names for a value's type -> what a person writes in a usage line
_KINDS = {"int": "INTEGER", "float": "NUMBER", "str": "TEXT", "path": "PATH", "file": "FILE", "directory": "FOLDER"}


def value_kind(label: str | None) -> str | None:
    """`<float>` -> NUMBER, `<list[str]>` -> TEXT, `<a|b>` -> a|b; None stays None."""
    if label is None:
        return None
    inner = label.strip("<>")
    inner = re.sub(r"^list\[(.*)\]$", r"\1", inner)
    if "|" in inner:
        return inner
    return _KINDS.get(inner, inner.upper())


def plain_help() -> None:
    """Show types and usage lines the plain way in every command's help (idempotent)."""
    from typer import rich_utils
    from typer.core import TyperArgument, TyperOption

    if getattr(TyperOption, "_videomini_plain", False):
        return
    option_type = TyperOption.display_type_rich
    argument_type = TyperArgument.display_type_rich

    def option_display(self: Any, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None  # a flag takes no value: nothing to show
        return self.metavar if self.metavar is not None else value_kind(option_type(self, ctx))

    def argument_display(self: Any, ctx: Any) -> str | None:
        return None if self.metavar is not None else value_kind(argument_type(self, ctx))

    def usage_name(self: Any) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def folded(*args: Any, **kwargs: Any) -> Any:
        text = make_rich_text(*args, **kwargs)
        if hasattr(text, "overflow"):
            text.overflow = "fold"  # a long default (a hub id) wraps onto the next line instead of ending in "…"
        return text

    make_rich_text = rich_utils._make_rich_text
    rich_utils._make_rich_text = folded
    TyperOption.display_type_rich = option_display
    TyperArgument.display_type_rich = argument_display
    TyperArgument._usage_display_name = usage_name
    TyperOption._videomini_plain = True
