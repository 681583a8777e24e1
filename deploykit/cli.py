"""What happens between the shell and a task: exit statuses, one-line errors, redaction.

Invoke reports its own parse errors (unknown task or flag, a flag missing its value) with status 1
and no hint; `install_parse_errors` makes them ours: one line, status 2, "did you mean". The
`exits` decorator maps every way a task can end to an exit status with at most one line on stderr
(and, with --json, still exactly one JSON object on stdout), never a traceback or a secret.
"""

from __future__ import annotations

import atexit
import difflib
import functools
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Exit
from invoke.exceptions import ParseError

from deploykit.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, ApplyError, DeployKitError, UserError
from deploykit.report import emit_error_json, redact


def exits(task_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """User mistakes leave with one line and status 2; apply failures with status 1."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            as_json = bool(kwargs.get("json"))
            _term_as_interrupt()
            try:
                code = func(*args, **kwargs)
                sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
            except UserError as exc:
                _leave(task_name, as_json, f"error: {exc}", EXIT_USAGE)
            except (ApplyError, DeployKitError) as exc:
                _leave(task_name, as_json, f"failed: {exc}", EXIT_FAILED)
            except KeyboardInterrupt:
                _leave(task_name, as_json, "interrupted; nothing more was started (see the audit log)", EXIT_INTERRUPTED)
            except BrokenPipeError:
                _quiet_stdout()
                _leave(task_name, False, "error: output closed early (broken pipe); the run stopped", EXIT_USAGE)
            except Exception as exc:  # a bug of ours: one redacted line, no traceback that could carry a secret
                if os.environ.get("DEPLOYKIT_DEBUG"):
                    raise
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                _leave(task_name, as_json, f"internal error: {type(exc).__name__}: {first} (DEPLOYKIT_DEBUG=1 shows more)", 1)
            if code:
                raise Exit(code=code)

        return wrapper

    return decorate


def _term_as_interrupt() -> None:
    """SIGTERM (a CI cancel, `kill`) ends a task like Ctrl-C: exit 130, never a silent death mid-write."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def _leave(task_name: str, as_json: bool, message: str, code: int) -> None:
    message = redact(message)
    if as_json:
        emit_error_json(task_name, message, code)
    raise Exit(message, code=code) from None


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def install_parse_errors() -> None:
    """Invoke's parse errors exit 2 with one line and a suggestion (Invoke has no hook for this)."""
    from invoke.program import Program

    if getattr(Program, "_deploykit_parse_errors", False):
        return
    for method in ("parse_tasks", "parse_cleanup"):
        setattr(Program, method, _translating(getattr(Program, method)))
    Program._deploykit_parse_errors = True  # type: ignore[attr-defined]


def install_fast_exit() -> None:
    """A command line run ends at once when its tasks are done, without the interpreter's teardown.

    Freeing every module and object at exit costs a run about 0.2 s (as long as a no-op's reads).
    When `invoke` runs as the command (its module-level `program`, on the main thread) and only
    daemon threads are left, the exit handlers run, stdout and stderr are flushed and the process
    leaves with its status: nothing of ours is buffered (the audit log is written with os.write;
    connections are closed by their tasks). Invoke's `run` is already under way when tasks.py
    loads, so this wraps `execute`, the step after loading. An interrupt ends the same way (the
    task turned it into status 130). Any other Program (tests, embedders), a process that is not
    the `invoke`/`inv` command, one a profiler, debugger or coverage tool watches, or a run that
    still has a worker thread alive (an apply pool after Ctrl-C) gets Invoke's own exit.
    """
    from invoke.program import Program

    if getattr(Program, "_deploykit_fast_exit", False):
        return
    Program.execute = _exiting_at_once(Program.execute)  # type: ignore[method-assign]
    Program._deploykit_fast_exit = True  # type: ignore[attr-defined]


def _exiting_at_once(execute: Callable[[Any], None]) -> Callable[[Any], None]:
    @functools.wraps(execute)
    def wrapper(self: Any) -> None:
        from invoke.main import program

        on_main = threading.current_thread() is threading.main_thread()
        if not (self is program and _is_the_command() and _unobserved() and on_main):
            return execute(self)
        try:
            execute(self)
        except Exit as done:
            if _workers_left():
                raise
            if done.message:
                print(done.message, file=sys.stderr)  # as Invoke's run prints it
            _exit_now(done.code)
        if not _workers_left():
            _exit_now(0)

    return wrapper


def _is_the_command() -> bool:
    """This process is `invoke`/`inv` (its script or `python -m invoke`), not code that imported it."""
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return started.name in ("invoke", "inv") or started.parts[-2:] == ("invoke", "__main__.py")


def _unobserved() -> bool:
    """No profiler, debugger or coverage tool is hooked in: they write their results at a normal exit."""
    return sys.getprofile() is None and sys.gettrace() is None


def _workers_left() -> bool:
    main = threading.main_thread()
    return any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate())


def _exit_now(code: int) -> None:
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said there
            _quiet_stdout()
    os._exit(code)


def _translating(method: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(method)
    def wrapper(self: Any) -> None:
        try:
            method(self)
        except ParseError as exc:
            message = redact(f"error: {describe(exc, self)}")
            if _wants_json(_argv(self)):  # --json promises one JSON object, also when the command line is wrong
                emit_error_json(_parse_error_task(exc), message, EXIT_USAGE)
            raise Exit(message, code=EXIT_USAGE) from None
        except BrokenPipeError:
            # `invoke --list | head`: the reader left; say nothing more (stdout is gone).
            _quiet_stdout()
            raise Exit(code=EXIT_USAGE) from None

    return wrapper


_UNKNOWN_WORD = re.compile(r"No idea what '(.*)' is!")  # Invoke's message for an unknown task or flag


def describe(exc: ParseError, program: Any) -> str:
    """Invoke's message, with what is allowed and the closest match."""
    message = str(exc)
    unknown = _UNKNOWN_WORD.match(message)
    if not unknown:
        return message
    word = unknown.group(1)
    context = getattr(exc, "context", None)
    if word.startswith("-") and context is not None and getattr(context, "name", None):
        flags = sorted(f for f in context.flags if f.startswith("--") and f != "--help")
        hint = f"{context.name} takes no --env; " if word.split("=", 1)[0] == "--env" else _closest(word, flags)
        return f"{context.name}: unknown flag {word!r}; {hint}allowed: {', '.join(flags)}"
    switches = _switches(program)
    for arg in _argv(program):  # `--dry-run=yes`: Invoke reads a switch's value as the next task's name
        flag, _, value = arg.partition("=")
        if flag in switches and value == word:
            return f"{flag} is a switch and takes no value: write {flag} alone, without ={word}"
    names = sorted(program.collection.task_names) if program.collection is not None else []
    hint = _closest(word, names)
    return f"unknown task {word!r}; {hint}`invoke --list` shows every task"


def _argv(program: Any) -> list[str]:
    """The command line's words after the program name."""
    argv = getattr(program, "argv", None) or sys.argv
    return [str(a) for a in argv[1:]]


def _wants_json(argv: list[str]) -> bool:
    """--json (or --json=...) before a `--` (what follows it is the task's own, not ours)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json" or arg.startswith("--json="):
            return True
    return False


def _switches(program: Any) -> set[str]:
    """Every task's true/false flags (`--dry-run`, `--yes`, ...), as typed."""
    collection = getattr(program, "collection", None)
    if collection is None:
        return set()
    return {
        f"--{name}"
        for task in collection.task_names
        for argument in collection[task].get_arguments()
        if argument.kind is bool
        for name in argument.names
        if len(name) > 1
    }


def _parse_error_task(exc: ParseError) -> str | None:
    """The task a parse error is about, when Invoke says (a flag's task, a missing argument's task).

    None for an unknown task: the error is about the command line, not the task before the word.
    """
    unknown = _UNKNOWN_WORD.match(str(exc))
    if unknown and not unknown.group(1).startswith("-"):
        return None
    context = getattr(exc, "context", None)
    name = getattr(context, "name", None)
    if name:
        return str(name)
    missing = re.match(r"'([^']+)' did not receive", str(exc))
    return missing.group(1) if missing else None


def _closest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {match[0]!r}? " if match else ""
