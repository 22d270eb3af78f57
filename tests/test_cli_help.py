"""Help that reads well: every option says what it does, a value's kind is written as a person writes it (no
`<bool>` or `<list[str]>`), usage lines name arguments plainly (no `{VIDEO QUESTION}...`), and defaults show in
full on an 80-column terminal."""

from __future__ import annotations

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from videomini.cli.main import app

COMMANDS = sorted(get_command(app).commands)


def test_every_option_of_every_command_has_a_sentence_of_help():
    missing = [f"{name} {param.opts[0]}" for name, command in get_command(app).commands.items()
               for param in command.params if param.param_type_name == "option" and not param.help]
    assert missing == []


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)])
def test_help_shows_types_usage_and_defaults_plainly(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert not re.search(r"<(bool|str|int|float|path|list\[[a-z]+\])>", text), text
    assert "{" not in text.split("Usage:", 1)[1].splitlines()[0]
    assert "…" not in text  # nothing cut: long defaults fold onto the next line


def test_ask_help_names_its_arguments_and_the_default_model():
    text = CliRunner().invoke(app, ["ask", "--help"], env={"COLUMNS": "80", "TERM": "dumb"}).output
    assert "Usage: videomini ask [OPTIONS] VIDEO QUESTION..." in text
    assert "ICTNLP/llava-mini-llama-3.1" in text and "-8b" in text
    assert "--no-stream" in text and "Longest answer, in tokens." in text
