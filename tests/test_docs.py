"""The documentation's code is the code that runs (`pytest -m docs`).

How README.md and docs/*.md mark their code blocks:
- ```bash and ```python blocks are run: README.md first, then docs/ by name, all in one temporary folder (a later
  block may use what an earlier one wrote, as a reader following the page would), `archfamily` and `python` being
  this interpreter's; each bash block runs alone, in order, and a page's python blocks run together after them,
  as one session;
- ```console blocks are commands too slow or too particular to run here (installs, long trainings, studies,
  clusters): each `archfamily` command in them must name commands that exist and options their --help lists,
  and each script they run (`python X.py`, `bash X.sh`) must exist;
- ```text blocks are output; ```py blocks are Python that is only compiled.
docs/cli.md is generated from --help by docs/make_cli_md.py and must equal what it generates now.
"""
from __future__ import annotations

import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "cli.md")]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

pytestmark = pytest.mark.docs


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]


def _commands(text: str) -> list[str]:
    """A console block's command lines: after `$ ` where the block has prompts, else every line; continuation
    lines joined."""
    lines = text.replace("\\\n", " ").splitlines()
    prompted = [line[2:] for line in lines if line.startswith("$ ")]
    return [line.strip() for line in (prompted if prompted else lines) if line.strip()]


def _command(words: list[str]) -> tuple[click.Command, list[str]]:
    from archfamily.cli.main import cli

    command: click.Command = cli
    path = []
    for word in words:
        if not isinstance(command, click.Group):
            break
        if word in command.commands:
            command, path = command.commands[word], path + [word]
        elif not word.startswith("-") and "run" in command.commands:  # `study PLAN`: the run command
            command, path = command.commands["run"], path + ["run"]
            break
        else:
            break
    return command, path


def check_console_line(line: str, page: Path) -> None:
    words = shlex.split(line, comments=True)
    while words and (re.fullmatch(r"[A-Z_]+=\S*", words[0]) or words[0] in ("nohup", "time", "nice")):
        words = words[1:]
    if not words:
        return
    if words[0] == "archfamily" or words[:3] == ["python", "-m", "archfamily"]:
        args = words[1:] if words[0] == "archfamily" else words[3:]
        command, path = _command(args)
        if isinstance(command, click.Group):
            assert not args or args[0] in ("-h", "--help", "--version"), f"{page.name}: {line!r}: no such command"
            return
        flags = {opt for p in command.params for opt in [*p.opts, *p.secondary_opts]} | {"-h", "--help"}
        for arg in args[len(path):]:
            if arg.startswith("-") and not re.fullmatch(r"-\d.*", arg):
                assert arg.split("=")[0] in flags, f"{page.name}: {line!r}: archfamily {' '.join(path)} has no {arg}"
    elif words[0] in ("python", "bash") and len(words) > 1 and words[1].endswith((".py", ".sh")) and "$" not in words[1]:
        assert (ROOT / words[1]).is_file(), f"{page.name}: {line!r}: {words[1]} does not exist"


def test_cli_md_is_what_the_commands_print() -> None:
    make = runpy.run_path(str(ROOT / "docs" / "make_cli_md.py"))
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == make["render"](), \
        "docs/cli.md is stale: run python docs/make_cli_md.py"


def test_console_blocks_name_real_commands_and_options() -> None:
    checked = 0
    for page in PAGES:
        for language, text in blocks(page):
            if language == "console":
                for line in _commands(text):
                    check_console_line(line, page)
                    checked += 1
            elif language == "py":
                compile(text, str(page), "exec")
    assert checked > 10


def _run(argv: list[str], cwd: Path, env: dict[str, str], page: Path, text: str) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{page.name}: this code failed:\n{text}\n{done.stderr[-3000:]}"


def test_bash_and_python_blocks_run(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "archfamily").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m archfamily "$@"\n')
    (bin_dir / "archfamily").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    ran = 0
    for page in PAGES:
        python = []
        for language, text in blocks(page):
            if language == "bash":
                _run(["bash", "-euo", "pipefail", "-c", text], work, env, page, text)
                ran += 1
            elif language == "python":
                python.append(text)
        if python:  # a page's Python blocks are one session, as a reader pastes them into one interpreter
            script = "\n".join(python)
            _run([sys.executable, "-c", script], work, env, page, script)
            ran += len(python)
    assert ran >= 2


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_the_pages_lead_somewhere() -> None:
    """Every relative link in README.md, RESULTS.md, CHANGELOG.md, docs/ and studies/'s READMEs names a file that
    exists (docs/library.md and docs/timm-compatibility.md may not yet) and, with #anchor, a heading in it."""
    pages = [ROOT / "README.md", ROOT / "RESULTS.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md"),
             *(ROOT / "studies").rglob("README.md")]
    pending = {ROOT / "docs" / "library.md", ROOT / "docs" / "timm-compatibility.md"}
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if file in pending and not file.exists():
                continue
            assert file.exists(), f"{page.relative_to(ROOT)}: link to {target}: no such file"
            if anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", file.read_text(encoding="utf-8"), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{page.relative_to(ROOT)}: link to {target}: no such heading"
