"""The ``emphysema-xai`` command line: a thin front end over the library.

Exit codes (``docs/contracts.md``): 0 done; 2 bad input (one line on stderr); 3 excluded by
quality control; 4 the disk (or the quota) is full (one line naming the output; unfinished files
removed, earlier outputs kept); 1 unexpected internal error (one line plus the path of a log with the
traceback; ``--debug`` shows the traceback instead). ``--json`` prints exactly one JSON object.

Each module of this package registers its sub-commands beside their handlers
(:func:`.registry.command`): :mod:`.inputs` (info, phantom), :mod:`.case` (segment, qct,
analyze, demo), :mod:`.cohort` (batch), :mod:`.models` (train, train-patterns, patterns,
evaluate, explain-eval), :mod:`.embeddings` (embed, fit-linear).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .. import __version__
from ..app.run_log import library_messages_to_log
from ..errors import DiskFullError, ExcludedError, InputError
from ..io.disk_full import as_disk_full
from ..io.signals import Terminated, signal_handlers, watch_stop_file
from ..notices import NOT_CLINICAL
from .registry import COMMANDS, add_config

__all__ = ["COMMANDS", "EXIT_DISK_FULL", "build_parser", "main"]

#: exit code of a run stopped because the disk (or the user's quota) is full
EXIT_DISK_FULL = 4

#: the command modules, in the order their commands appear in ``--help`` (importing registers them)
COMMAND_MODULES = ("inputs", "case", "cohort", "models", "embeddings")
for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every registered sub-command (``--config`` on those that take one)."""
    parser = argparse.ArgumentParser(
        prog="emphysema-xai",
        description="Explainable emphysema assessment on chest CT (headless EmphysemaXAI). " + NOT_CLINICAL)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks of internal errors, and the libraries' own messages (otherwise in the "
                             "run's log, $TMPDIR/emphysema-xai-<uid>.log)")
    parser.add_argument("--stop-file", metavar="PATH",
                        help="stop (like SIGTERM: unfinished outputs removed) when this file appears; how the "
                             "Slicer module cancels the analysis it launched; the run also stops when the process "
                             "that started it exits")
    parser.add_argument("--parent-pid", metavar="PID", type=int,
                        help="with --stop-file: also stop when process PID (the GUI that launched the run) has exited")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        child = sub.add_parser(command.name, help=command.help)
        if command.config:
            add_config(child)
        command.flags(child)
        child.set_defaults(func=command.run)
    return parser


def main(argv=None) -> int:
    """Run one command. SIGTERM and SIGHUP stop it like Ctrl-C does: the atomic writers remove
    what they had started, the output locks and scratch folders go, and the exit code is
    128 + the signal number with one line on stderr."""
    args = build_parser().parse_args(argv)
    # the libraries' messages (logging, warnings, C / C++ output) go to the run's log (app/run_log.py)
    with library_messages_to_log(args.debug, args.command) as log, signal_handlers():
        if args.stop_file:
            watch_stop_file(args.stop_file, parent_pid=args.parent_pid)
        try:
            return log.finish(_run(args))
        except Terminated as stop:
            print(f"emphysema-xai: stopped by {stop.name}; unfinished outputs were removed", file=sys.stderr)
            return 128 + stop.signum


def _run(args) -> int:
    try:
        return args.func(args)
    except InputError as error:
        print(f"emphysema-xai: error: {error}", file=sys.stderr)
        return 2
    except ExcludedError as error:
        print(f"emphysema-xai: excluded by quality control: {error}", file=sys.stderr)
        return 3
    except DiskFullError as error:
        print(f"emphysema-xai: error: {error}", file=sys.stderr)
        return EXIT_DISK_FULL
    except KeyboardInterrupt:
        print("emphysema-xai: interrupted", file=sys.stderr)
        return 130
    except MemoryError:  # beyond the up-front estimate (io/memory.py): one line, outputs removed, exit 2
        from ..io.memory import out_of_memory_message

        print(f"emphysema-xai: error: {out_of_memory_message()}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - the one place internal errors are reported
        full = as_disk_full(error)  # a full disk met outside the atomic writers (e.g. the scratch folder)
        if full is not None:
            print(f"emphysema-xai: error: {full}", file=sys.stderr)
            return EXIT_DISK_FULL
        if args.debug:
            traceback.print_exc()
        else:
            first = str(error).splitlines()[0] if str(error) else ""
            log = Path(tempfile.gettempdir()) / f"emphysema-xai-error-{time.strftime('%Y%m%d-%H%M%S')}.log"
            try:
                log.write_text(traceback.format_exc())
                where = f"traceback in {log}; rerun with --debug to see it"
            except OSError as failure:  # e.g. the temporary folder's disk is full too
                where = f"no traceback log: {failure.strerror}; rerun with --debug to see the traceback"
            print(f"emphysema-xai: internal error: {type(error).__name__}: {first} ({where})", file=sys.stderr)
        return 1
