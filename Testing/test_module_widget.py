"""The module's widget logic without Qt: the Widget class of EmphysemaXAI.py run on stand-ins for
its widgets (the Slicer application is not on this machine; the bindings it relies on were read
in Slicer 5.10's parameterNodeWrapper and CTK's ctkPathLineEdit / ctkCheckableComboBox)."""
import ast
import contextlib
import logging
import os
import sys
import types
from types import SimpleNamespace

import pytest
from helpers import PROJECT

from EmphysemaXAILib.options import EXPLAIN_METHODS, explain_choice, explain_methods

pytestmark = pytest.mark.slicer_python  # needs nothing beyond Slicer's packages

MODULE = PROJECT / "EmphysemaXAI" / "EmphysemaXAI.py"


class PathLineEdit:
    """ctkPathLineEdit's Python face: ``currentPath`` (its line edit's text), ``filters``."""

    def __init__(self):
        self.currentPath, self.filters = "", None


class Index:
    def __init__(self, row):
        self._row = row

    def row(self):
        return self._row


class CheckableComboBox:
    """ctkCheckableComboBox's Python face: items, ``checkedIndexes()``, ``checkState`` /
    ``setCheckState`` on ``model().index(row, 0)``."""

    def __init__(self, items):
        self.items, self.checked = list(items), set()
        self.count = len(self.items)

    def itemText(self, row):
        return self.items[row]

    def model(self):
        return SimpleNamespace(index=lambda row, column: Index(row))

    def checkState(self, index):
        return 2 if index.row() in self.checked else 0

    def setCheckState(self, index, state):
        (self.checked.add if state == 2 else self.checked.discard)(index.row())

    def checkedIndexes(self):
        return [Index(row) for row in sorted(self.checked)]


class Parameters(SimpleNamespace):
    """The parameter node wrapper: plain attributes (each write would notify the widget)."""


def _module_constant(tree, name):
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == name)
    return ast.literal_eval(node.value)


@pytest.fixture
def widget(monkeypatch):
    """An EmphysemaXAIWidget (the module's own class, compiled from its source) on stand-ins."""
    tree = ast.parse(MODULE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EmphysemaXAIWidget")
    shown = []
    slicer = SimpleNamespace(util=SimpleNamespace(
        tryWithErrorDisplay=lambda *args, **kwargs: contextlib.nullcontext(),
        infoDisplay=lambda text: shown.append(("info", text)),
        warningDisplay=lambda text: shown.append(("warn", text))))
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(Qt=SimpleNamespace(Checked=2, Unchecked=0)))
    base = type("Base", (), {"__init__": lambda self, *args: None})
    namespace = {"ScriptedLoadableModuleWidget": base, "VTKObservationMixin": type("Mixin", (), {}),
                 "contextlib": contextlib, "logging": logging, "os": os, "_": lambda text: text, "slicer": slicer,
                 "EXPLAIN_METHODS": EXPLAIN_METHODS, "explain_choice": explain_choice,
                 "explain_methods": explain_methods, "PATH_PARAMETERS": _module_constant(tree, "PATH_PARAMETERS")}
    exec(compile(ast.Module(body=[cls], type_ignores=[]), str(MODULE), "exec"), namespace)
    w = namespace["EmphysemaXAIWidget"]()
    button = lambda: SimpleNamespace(enabled=True, toolTip="")  # noqa: E731
    w.ui = SimpleNamespace(lungmaskWeightsPathLineEdit=PathLineEdit(), configFilePathLineEdit=PathLineEdit(),
                           modelPathLineEdit=PathLineEdit(), explainMethodsComboBox=CheckableComboBox(EXPLAIN_METHODS),
                           applyButton=button(), recomputeButton=button(), cancelButton=button(),
                           dependenciesButton=button(), downloadWeightsButton=button(),
                           progressBar=SimpleNamespace(value=0), logTextBrowser=SimpleNamespace(append=lambda t: None))
    w._parameterNode = Parameters(inputVolume="a CT node", outputSegmentation=None, lungmaskWeights="", configFile="",
                                  modelPath="", explainMethods="gradcam,attention", engine="auto", device="auto",
                                  qcProfile="default", emphysemaThreshold=-950.0)
    w.shown = shown
    return w


def test_path_fields_show_empty_parameters_empty_and_apply_reads_a_cleared_field(widget):
    """Path fields are ctkPathLineEdits bound to string parameters by the widget: an empty
    parameter shows an empty field (Slicer's pathlib.Path binding would show "."), and a field
    the user cleared (CTK sends no currentPathChanged for an empty path) is read at Apply."""
    widget._parametersToGui()
    assert [widget.ui.modelPathLineEdit.currentPath, widget.ui.configFilePathLineEdit.currentPath] == ["", ""]
    widget.ui.modelPathLineEdit.currentPath = "/models/severity-v2 "
    widget._guiToParameters()                                          # currentPathChanged
    assert widget._parameterNode.modelPath == "/models/severity-v2"
    widget.ui.modelPathLineEdit.currentPath = ""                       # cleared: no signal
    widget._guiToParameters()                                          # what _start calls first
    assert widget._parameterNode.modelPath == ""
    widget._parameterNode.lungmaskWeights = "/weights/r231.pth"         # e.g. a settings file's value
    widget._parametersToGui()
    assert widget.ui.lungmaskWeightsPathLineEdit.currentPath == "/weights/r231.pth"


def test_explanation_methods_are_ticked_choices_kept_in_one_parameter(widget):
    widget._parametersToGui()
    combo = widget.ui.explainMethodsComboBox
    assert [combo.itemText(i) for i in sorted(combo.checked)] == ["gradcam", "attention"]
    combo.checked.add(EXPLAIN_METHODS.index("ig"))                    # the user ticks ig
    widget._guiToParameters()
    assert widget._parameterNode.explainMethods == "gradcam,ig,attention"
    combo.checked.clear()
    widget._guiToParameters()
    assert widget._parameterNode.explainMethods == ""
    widget._parameterNode.explainMethods = "Occlusion, smoothgrad"      # a settings file's value
    widget._parametersToGui()
    assert {combo.itemText(i) for i in combo.checked} == {"occlusion", "smoothgrad"}
    with pytest.raises(ValueError, match="unknown explanation method"):
        explain_choice(["gradcam", "lime"])


def test_a_settings_file_fills_the_panel_once_it_names_an_existing_file(widget, tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('[segmentation]\nengine = "classical"\n[model]\nexplain = ["ig"]\n')
    widget.ui.configFilePathLineEdit.currentPath = str(tmp_path / "si")  # typing: not a file yet
    widget.onConfigFileChosen()
    assert widget._parameterNode.engine == "auto" and not widget.shown
    widget.ui.configFilePathLineEdit.currentPath = str(path)
    widget.onConfigFileChosen()
    assert widget._parameterNode.configFile == str(path)
    assert (widget._parameterNode.engine, widget._parameterNode.explainMethods) == ("classical", "ig")


class InstallingLogic:
    """Records the panel's buttons while an install runs; meanwhile the user changes a parameter
    (Slicer processes events during pip), which makes the widget re-check its buttons."""

    def __init__(self, widget):
        self.widget, self.seen = widget, []

    def _install(self):
        self.widget._parameterNode.engine = "classical"
        self.widget._onParameterNodeModified()
        ui = self.widget.ui
        self.seen.append((ui.applyButton.enabled, ui.recomputeButton.enabled, ui.dependenciesButton.enabled,
                          ui.downloadWeightsButton.enabled))
        return SimpleNamespace(ok=True, cancelled=False, message="installed", installed=["torch"])

    def missingFor(self, options, dicom=False):
        return [SimpleNamespace(package="torch", required=False)]

    def installFor(self, needs):
        return self._install()

    def missingDependencies(self):
        return ["torch"]

    def installDependencies(self, names):
        return self._install()

    def downloadLungmaskWeights(self):
        self._install()
        return {"R231": "/hub/unet_r231.pth"}, []


def test_apply_stays_disabled_while_an_install_or_download_runs(widget):
    """Issue 26 item 10: Apply must be off while a dependency install runs. Before, the install
    from Apply's check re-enabled it as soon as a parameter changed, and "Check dependencies" and
    "Download lungmask weights" never disabled it."""
    widget.logic = InstallingLogic(widget)
    widget._parameterNode.outputSegmentation = "the lungs of the last run"
    widget._run = None
    assert widget._checkDependencies(object()) is not None
    widget.onDependenciesButton()
    widget.onDownloadWeightsButton()
    assert widget.logic.seen == [(False, False, False, False)] * 3
    ui = widget.ui
    assert (ui.applyButton.enabled, ui.recomputeButton.enabled, ui.dependenciesButton.enabled,
            ui.downloadWeightsButton.enabled) == (True, True, True, True)


def test_cancel_resets_the_progress_bar_and_gives_apply_back(widget):
    stopped = []
    widget.logic = SimpleNamespace(cancelAnalysis=stopped.append)
    widget._timer = SimpleNamespace(stop=lambda: stopped.append("timer"))
    widget._run = "the run"
    widget.ui.progressBar.value = 57
    widget.ui.applyButton.enabled, widget.ui.cancelButton.enabled = False, True
    widget.onCancelButton()
    assert stopped == ["timer", "the run"] and widget._run is None
    assert widget.ui.progressBar.value == 0
    assert (widget.ui.applyButton.enabled, widget.ui.cancelButton.enabled) == (True, False)
