"""README's command-line synopsis matches the commands' --help (issue 13 item 9).

Every option the synopsis names for a command is one that command's --help lists, and every
command and subcommand of ``redflags --help`` has a line in the synopsis.
"""

from __future__ import annotations

import functools
import re

import pytest

from .cli_helpers import run
from .conftest import ROOT

#: Every command path of the CLI ("" is ``redflags`` itself); test_the_list_is_the_cli_s keeps it true.
COMMANDS = (
    "",
    "feedback",
    "feedback report",
    "history",
    "history forget",
    "history tenants",
    "outbox",
    "outbox flush",
    "outbox list",
    "outbox retry",
    "outbox status",
    "replay",
    "rules",
    "serve",
    "token",
)
#: Lines of the current README the lead is to correct (the corrected synopsis: the hygiene note).
#: strict: once README is fixed the XPASS fails, and the entry goes.
README_WRONG: dict[str, str] = {}


@functools.cache
def help_of(command: str) -> tuple[frozenset[str], frozenset[str]]:
    """(options, subcommands) listed by ``redflags <command> --help``."""
    proc = run(*command.split(), "--help")
    assert proc.returncode == 0, proc.stderr
    options: set[str] = set()
    commands: set[str] = set()
    section = ""
    for line in proc.stdout.splitlines():
        if re.fullmatch(r"[A-Z]\w*:", line):
            section = line
        elif section == "Options:" and (found := re.match(r"  (?:-\w, )?(--[\w-]+(?: / --[\w-]+)?)", line)):
            options.update(found.group(1).split(" / "))
        elif section == "Commands:" and (found := re.match(r"  ([a-z][\w-]*)\s", line)):
            commands.add(found.group(1))
    return frozenset(options), frozenset(commands)


def synopsis_lines() -> list[str]:
    """The synopsis block's lines, continuation lines joined to the line they continue."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## The command line", 1)[1].split("```", 2)[1]
    logical: list[str] = []
    for line in block.splitlines():
        if line.startswith("redflags"):
            logical.append(line)
        elif line.strip() and logical:
            logical[-1] += " " + line.strip()
    return logical


def synopsis() -> dict[str, set[str]]:
    """Command path -> the options its synopsis lines name (``a|b`` names both subcommands)."""
    named: dict[str, set[str]] = {}
    for line in synopsis_lines():
        words = line.split("#", 1)[0].split()[1:]
        paths = [""]
        while words and not words[0].startswith("-"):
            longer = [f"{p} {alt}".strip() for p in paths for alt in words[0].split("|")]
            if not all(path in COMMANDS for path in longer):
                break
            paths, words = longer, words[1:]
        for path in paths:
            named.setdefault(path, set()).update(re.findall(r"--[a-z][\w-]*", " ".join(words)))
    return named


def test_the_list_is_the_cli_s() -> None:
    tree = [""]
    for command in tree:
        tree += [f"{command} {sub}".strip() for sub in sorted(help_of(command)[1])]
    assert sorted(tree) == sorted(COMMANDS)


def test_every_command_has_a_synopsis_line() -> None:
    groups = {c for c in COMMANDS if help_of(c)[1]}
    assert {c for c in COMMANDS if c not in groups} - {""} <= synopsis().keys()


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=README_WRONG[c]))
        if c in README_WRONG
        else c
        for c in COMMANDS
    ],
)
def test_the_synopsis_names_only_options_the_command_has(command: str) -> None:
    unknown = synopsis().get(command, set()) - help_of(command)[0]
    assert not unknown, f"not in `redflags {command} --help`: {sorted(unknown)}"


def test_the_parser_sees_the_synopsis() -> None:
    """Not vacuous: the synopsis is found and read per command (replay's continuation lines too)."""
    named = synopsis()
    assert {"--now", "--spark-master", "--delivery-wait"} <= named["replay"]
    assert named["outbox flush"] >= {"--state", "--fhir-server"} and named[""] >= {"--log-level"}


def test_no_synopsis_line_is_repeated() -> None:
    lines = synopsis_lines()
    assert len(lines) == len(set(lines)), [line for line in lines if lines.count(line) > 1]
