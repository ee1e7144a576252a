"""What the command line prints besides results: warnings, progress, figure lines (stderr/stdout)."""
from __future__ import annotations

import sys


def print_warnings(*groups) -> None:
    """Warnings (read, quality control, segmentation, model) as ``  warning ...`` lines on
    stderr, each once, whatever the output mode: stdout stays for results / JSON."""
    seen = set()
    for group in groups:
        for warning in group or ():
            if warning and warning not in seen:
                seen.add(warning)
                print(f"  warning {warning}", file=sys.stderr)


_last_progress = {"step": None, "fraction": -1.0}


def progress(step, fraction, message) -> None:
    """The ``progress`` callback of :func:`~EmphysemaXAILib.pipeline.analyze_case`: one stderr
    line per step, and within a step (slices, tiles) one each time it has moved 2 % of the whole
    run further (a bar that moves, a log that stays readable)."""
    from ..app.analysis_process import format_progress

    if step == _last_progress["step"] and fraction - _last_progress["fraction"] < 0.02 and fraction < 1.0:
        return
    _last_progress.update(step=step, fraction=fraction)
    print(format_progress(fraction, message), file=sys.stderr)


def print_lines(lines, prefix: str = "") -> None:
    for line in lines:
        if line is not None:
            print(f"{prefix}{line}")


def print_figures(title: str, figures: dict) -> None:
    """One line of a model's figures with their 95 % intervals (train / evaluate)."""
    if not figures or not figures.get("n"):
        return
    ci = figures.get("ci95", {})

    def show(key, fmt="{:.3f}"):
        value = figures.get(key)
        if value is None:
            return f"{key} n/a"
        interval = f" [{fmt.format(ci[key][0])}, {fmt.format(ci[key][1])}]" if key in ci else ""
        return f"{key} {fmt.format(value)}{interval}"

    print(f"{title} ({figures['n']} cases, {figures.get('n_clear', '?')} clear of the cutpoints by 2 points): "
          + "; ".join(show(k) for k in ("accuracy", "accuracy_clear", "balanced_accuracy", "weighted_kappa_quadratic",
                                         "extent_mae", "extent_spearman")))


def command_line() -> str | None:
    """The command as typed (recorded in model folders), when run as ``emphysema-xai``."""
    return "emphysema-xai " + " ".join(sys.argv[1:]) if sys.argv and "emphysema" in sys.argv[0] else None
