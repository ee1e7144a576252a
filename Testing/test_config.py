"""--config FILE.toml: thresholds, cutpoints and engine options in one place."""
import json

import pytest

from EmphysemaXAILib import InputError
from EmphysemaXAILib.config import load_settings
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom
from EmphysemaXAILib.analysis.qct import measure_qct

from conftest import run_cli

CONFIG = """
[segmentation]
engine = "classical"

[qc]
profile = "seeds"

[qct]
laa_thresholds = [-950, -900]
inclusive = false
noisy_hu = 80

[severity]
cutpoints = [1.0, 2.0, 3.0]
zone_cutpoints = [0.1, 0.2, 0.3]
"""


def test_settings_change_thresholds_conventions_and_cutpoints(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text(CONFIG)
    settings = load_settings(path)
    assert settings.engine == "classical" and settings.qc_profile == "seeds"
    phantom = generate_phantom(PhantomParams(size="small", seed=2, extent_pct=4, pattern="centrilobular", noise_hu=0))
    default = measure_qct(phantom.ct, phantom.labels["lungs"]).qct_severity
    configured = measure_qct(phantom.ct, phantom.labels["lungs"], config=settings.qct)
    assert default["class"] == "none"                    # 4 % < 5 %
    assert configured.qct_severity["class"] == "severe"  # 4 % >= 3 % with the configured cutpoints
    assert "laa900_pct" in configured.region("whole") and "laa925_pct" not in configured.region("whole")


@pytest.mark.parametrize("text,message", [("[qct]\nlaa_threshold = [-950]\n", "unknown key 'laa_threshold'"),
                                          ("[colors]\nx = 1\n", "unknown section [colors]"),
                                          ("[qct]\ninclusive = 'yes'\n", "wrong type"),
                                          ("[severity]\ncutpoints = [5, 1, 2]\n", "three increasing numbers"),
                                          ("[qct\n", "not valid TOML")])
def test_bad_settings_are_refused_by_name(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        load_settings(path)


def test_cli_analyze_uses_the_config_and_refuses_a_bad_one(tmp_path):
    phantom = generate_phantom(PhantomParams(size="small", seed=2, extent_pct=4, pattern="centrilobular"))
    folder = write_phantom(phantom, tmp_path / "ph", fmt="nrrd")
    (tmp_path / "s.toml").write_text(CONFIG)
    result = run_cli("analyze", folder / "ct.nrrd", "--out", tmp_path / "out", "--no-scene", "--no-report",
                     "--config", tmp_path / "s.toml", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["segmentation"]["engine_used"] == "classical" and summary["segmentation"]["fallback_reason"] is None
    assert summary["qc"]["profile"] == "seeds"
    assert summary["qct_severity"]["class"] == "severe"
    (tmp_path / "bad.toml").write_text("[qct]\nthreshold = 1\n")
    bad = run_cli("analyze", folder / "ct.nrrd", "--out", tmp_path / "o2", "--config", tmp_path / "bad.toml")
    assert bad.returncode == 2 and "unknown key 'threshold'" in bad.stderr and not (tmp_path / "o2").exists()
