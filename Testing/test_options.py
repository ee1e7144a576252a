"""One options object: --config FILE.toml, explicit arguments, the Slicer panel, and the one
merge rule (defaults < config file < explicit arguments)."""
import dataclasses
import json

import pytest
from helpers import run_cli

from EmphysemaXAILib import InputError
from EmphysemaXAILib.analysis.qct import measure_qct
from EmphysemaXAILib.options import (
    DEFAULTS,
    ENGINES,
    AnalysisOptions,
    build_options,
    options_from_panel,
    options_from_toml,
    panel_values,
)
from EmphysemaXAILib.phantom import PhantomParams, generate_phantom
from EmphysemaXAILib.phantom.io import write_phantom

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
    options = build_options(path)
    assert options.engine == "classical" and options.qc_profile == "seeds"
    phantom = generate_phantom(PhantomParams(size="small", seed=2, extent_pct=4, pattern="centrilobular", noise_hu=0))
    default = measure_qct(phantom.ct, phantom.labels["lungs"]).qct_severity
    configured = measure_qct(phantom.ct, phantom.labels["lungs"], config=options.qct_config())
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
        options_from_toml(path)


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


def test_precedence_defaults_then_file_then_explicit_arguments(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(CONFIG + '[model]\npath = "none"\n')
    assert build_options().engine == "auto" and build_options().model == "auto"       # defaults
    from_file = build_options(path)
    assert from_file.engine == "classical" and from_file.model == "none" and from_file.qc_profile == "seeds"
    # an explicit value equal to the default still wins over the file (the old rule could not)
    explicit = build_options(path, engine="auto", qc_profile="default", model="auto")
    assert (explicit.engine, explicit.qc_profile, explicit.model) == ("auto", "default", "auto")
    # None means "not given": the file's value stays
    assert build_options(path, engine=None).engine == "classical"
    # QCT fields: CIP's conventions as the base, the file's keys and explicit values on top
    cip = build_options(path, cip_compatible=True).qct_config()
    assert cip.hu_range == (-1024, 1024) and cip.percentile_rule == "cip"
    assert cip.laa_thresholds == (-950.0, -900.0) and cip.noisy_hu == 80
    assert [b for b, _ in cip.severity_cutpoints] == [1.0, 2.0, 3.0]
    assert build_options(path, inclusive=True).qct_config().inclusive is True    # file said false
    assert build_options(path).qct_config().inclusive is False


def test_options_are_frozen_validated_and_merged_by_one_rule():
    options = AnalysisOptions(engine="classical")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.engine = "lungmask"
    assert options.merged(AnalysisOptions(device="cpu"), AnalysisOptions(engine="lungmask")).given() == \
        {"engine": "lungmask", "device": "cpu"}
    assert DEFAULTS.merged(options).resolved() == options.resolved()
    for bad, match in ((dict(engine="unet"), "engine 'unet'"), (dict(device="tpu"), "device 'tpu'"),
                       (dict(explain=("gradcam", "lime")), "unknown explanation method lime"),
                       (dict(severity_cutpoints=(5, 25, 15)), "three increasing numbers"),
                       (dict(model="none", explain=("gradcam",)), "explanations need the severity model")):
        with pytest.raises(InputError, match=match):
            AnalysisOptions(**bad)
    with pytest.raises(TypeError, match="unknown option"):
        build_options(engin="classical")


def test_the_slicer_panel_loads_a_file_and_its_values_win(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[segmentation]\nengine = "classical"\n[qct]\nemphysema_hu = -925\n[model]\ndevice = "cpu"\n')
    shown = panel_values(options_from_toml(path))          # what choosing the file puts in the panel
    assert shown["engine"] == "classical" and shown["emphysemaThreshold"] == -925.0 and shown["device"] == "cpu"
    assert options_from_panel(shown, str(path)).qct_config().emphysema_hu == -925.0
    # the user sets -950 (the default) over the file's -925: the panel wins
    panel = dict(shown, emphysemaThreshold=-950.0, engine="auto")
    options = options_from_panel(panel, str(path))
    assert options.qct_config().emphysema_hu == -950.0 and options.engine == "auto" and options.device == "cpu"
    assert options_from_panel({"modelPath": "", "explainMethods": "gradcam, ig"}).explain == ("gradcam", "ig")


def test_choice_lists_have_one_home_and_every_command_is_registered():
    from EmphysemaXAILib.cli import COMMANDS, build_parser
    from EmphysemaXAILib.segmentation import ENGINES as SEGMENTATION_ENGINES

    assert SEGMENTATION_ENGINES is ENGINES
    assert list(COMMANDS) == ["info", "phantom", "segment", "qct", "analyze", "demo", "batch", "train",
                              "train-patterns", "fit-fusion", "patterns", "evaluate", "explain-eval", "embed",
                              "fit-linear"]
    parser = build_parser()
    for name, command in COMMANDS.items():
        assert callable(command.run) and command.help
        with pytest.raises(SystemExit) as done:
            parser.parse_args([name, "--help"])
        assert done.value.code == 0


def test_cli_explicit_engine_auto_overrides_the_config_file(tmp_path):
    """--engine auto over a file saying classical: auto runs (lungmask has no weights here, so it
    falls back to classical and says why); without the flag the file's engine runs as asked."""
    phantom = generate_phantom(PhantomParams(size="small", seed=2, extent_pct=4, pattern="centrilobular"))
    folder = write_phantom(phantom, tmp_path / "ph", fmt="nrrd")
    (tmp_path / "s.toml").write_text('[segmentation]\nengine = "classical"\n[model]\npath = "none"\n')
    runs = {}
    for name, extra in (("file", ()), ("flag", ("--engine", "auto"))):
        result = run_cli("analyze", folder / "ct.nrrd", "--out", tmp_path / name, "--no-scene", "--no-report",
                         "--config", tmp_path / "s.toml", "--json", *extra)
        assert result.returncode == 0, result.stderr
        runs[name] = json.loads(result.stdout)
    assert runs["file"]["segmentation"]["fallback_reason"] is None and runs["file"]["severity"] is None
    assert runs["flag"]["segmentation"]["engine_used"] == "classical"
    assert runs["flag"]["segmentation"]["fallback_reason"]   # auto was asked for and fell back
