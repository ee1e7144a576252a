"""The developer tooling around the suite: the pre-commit hooks."""
import re
import subprocess
import sys
import tomllib

import yaml  # PyYAML: a dependency of dask (distributed), which the project requires
from helpers import PROJECT


def test_pre_commit_runs_the_locked_ruff_with_the_blanket_noqa_rule(tmp_path):
    config = yaml.safe_load((PROJECT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert set(hooks) == {"ruff-check"}
    hook = hooks["ruff-check"]
    assert hook["entry"].split()[:2] == ["ruff", "check"] and hook["language"] == "python"
    locked = re.search(r"^ruff==(\S+)$", (PROJECT / "requirements" / "lock.txt").read_text(), re.M).group(1)
    assert hook["additional_dependencies"] == [f"ruff=={locked}"]
    lint = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "PGH004" in lint["select"]
    # the rule fires with the project's configuration on a blanket noqa, and not on a specific one
    (tmp_path / "blanket.py").write_text("import os  # noqa\n")
    (tmp_path / "specific.py").write_text("import os  # noqa: F401\n")
    codes = {}
    for name in ("blanket.py", "specific.py"):
        done = subprocess.run([sys.executable, "-m", "ruff", "check", "--config", str(PROJECT / "pyproject.toml"),
                               "--no-cache", "--output-format", "concise", str(tmp_path / name)],
                              capture_output=True, text=True)
        codes[name] = (done.returncode, "PGH004" in done.stdout)
    assert codes == {"blanket.py": (1, True), "specific.py": (0, False)}
