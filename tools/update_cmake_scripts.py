#!/usr/bin/env python3
"""Rewrite MODULE_PYTHON_SCRIPTS in EmphysemaXAI/CMakeLists.txt from the .py files on disk.

Run after adding, moving or removing a module of EmphysemaXAILib; Testing/test_packaging.py
fails when the list and the disk disagree.
"""
import re
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "EmphysemaXAI"


def main() -> None:
    cmake = MODULE / "CMakeLists.txt"
    files = sorted(p.relative_to(MODULE).as_posix() for p in (MODULE / "EmphysemaXAILib").rglob("*.py"))
    body = "\n".join(["  ${MODULE_NAME}.py"] + [f"  {f}" for f in files])
    text = re.sub(r"(set\(MODULE_PYTHON_SCRIPTS\n)(.*?)(\n  \))", lambda m: m.group(1) + body + m.group(3),
                  cmake.read_text(), count=1, flags=re.S)
    cmake.write_text(text)


if __name__ == "__main__":
    main()
