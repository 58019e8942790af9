"""Every ``python -m segkit.<verb> ...`` command in the README composes, so a renamed key or option fails here,
not in a newcomer's terminal. Placeholders (``<run>``) are filled in; nothing is run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import compose_command

README = Path(__file__).resolve().parents[1] / "README.md"
HYDRA_VERBS = {"train", "predict", "eval", "export", "inspect", "plan", "crossval", "serve"}


def readme_commands() -> list[tuple[str, list[str]]]:
    """(verb, overrides) of every segkit command in the README's code blocks, continuation lines joined."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].split(" # ")[0]
            found = re.search(r"-m segkit\.(\w+)(.*)", line)
            if not found or found.group(1) not in HYDRA_VERBS:
                continue
            line = re.sub(r"<[^>]+>", "placeholder", found.group(2))
            args = [a for a in shlex.split(line) if "=" in a and not a.startswith(("hydra.", "$")) and "$" not in a]
            if "-m" in shlex.split(line):  # a multirun: compose its first job (data.fold=0,1,2 -> data.fold=0)
                args = [re.sub(r"=([^\[(,]+),.*", r"=\1", a) for a in args]
            commands.append((found.group(1), args))
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_commands_for_every_verb() -> None:
    assert {verb for verb, _ in COMMANDS} >= {"train", "predict", "eval", "export", "inspect"}


@pytest.mark.parametrize(("verb", "args"), COMMANDS, ids=[" ".join([v, *a])[:80] for v, a in COMMANDS])
def test_readme_command_composes(verb: str, args: list[str]) -> None:
    assert compose_command(verb, *args) is not None
