"""EmphysemaXAI: explainable emphysema assessment on chest CT (3D Slicer scripted module).

Module, parameter node, Widget, Logic and Test in the order of Slicer's template. The widget only
binds the GUI to the parameter node and calls the logic; the logic's ``process`` is what a
researcher calls from Slicer's Python console, ``processDirectory`` runs a folder of cases. All
computation lives in ``EmphysemaXAILib`` (core + MRML logic), which also runs headless (the
``emphysema-xai`` command line); what the widget calls is tested there on the slicer-core wheel.
"""
import logging
import os
from typing import Annotated

import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from EmphysemaXAILib.notices import NOT_CLINICAL
from EmphysemaXAILib.options import DEVICES, ENGINES, PANEL_FIELDS, QC_PROFILES

#: pip requirements the analysis needs beyond what Slicer ships (one home: this resource file)
REQUIREMENTS_FILE = os.path.join(os.path.dirname(__file__), "Resources", "requirements.txt")


#
# EmphysemaXAI
#


class EmphysemaXAI(ScriptedLoadableModule):
    """Module metadata (title, category, help, acknowledgement)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Emphysema XAI")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["EmphysemaXAI contributors"]
        self.parent.helpText = _(
            "Explainable emphysema assessment on chest CT.<ol>"
            "<li>Load a chest CT (DICOM browser, a file, or <i>Load sample</i> below).</li>"
            "<li>Pick it as <b>Chest CT</b>; optionally pick a lung segmentation you drew.</li>"
            "<li>Choose the engine (lungmask needs its weights; classical needs none).</li>"
            "<li>Press <b>Apply</b>: quality control, lung segmentation, densitometry; the LAA map "
            "shows over the CT, tables open in the layout.</li>"
            "<li>Edit the lungs in the Segment Editor if needed and press <b>Recompute from "
            "edited segmentation</b>.</li></ol>" + NOT_CLINICAL)
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, SimpleITK, pydicom, PyTorch, MONAI, captum and lungmask. Densitometry "
            "conventions follow the Chest Imaging Platform.")


#
# EmphysemaXAIParameterNode
#


@parameterNodeWrapper
class EmphysemaXAIParameterNode:
    """The module's parameters (names match ``SlicerParameterName`` in the .ui file).

    inputVolume - the chest CT (HU).
    inputSegmentation - optional lung segmentation ("Right lung" / "Left lung") replacing the engine.
    engine - auto (lungmask when its weights are found), lungmask or classical.
    lungmaskWeights - path of lungmask's R231 weights (else $EMPHYSEMA_XAI_LUNGMASK_WEIGHTS / torch hub cache).
    emphysemaThreshold - LAA threshold in HU.
    qcProfile - default or seeds.
    configFile - optional settings file (TOML, as ``--config`` of the command line); choosing one
        loads its values into the panel, and what the panel then shows wins over the file
        (``EmphysemaXAILib.options.options_from_panel``: defaults < file < panel).
    modelPath - severity model folder (empty: the model shipped with the extension).
    device - where the CNN runs: auto (CUDA, MPS, CPU), cpu or cuda.
    explainMethods - attribution maps to compute (comma-separated: gradcam, gradcampp, ig, attention,
        occlusion, smoothgrad).
    outputSegmentation - the lung segmentation written or updated by Apply.
    """

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    inputSegmentation: slicer.vtkMRMLSegmentationNode
    engine: Annotated[str, Choice(list(ENGINES))] = "auto"
    lungmaskWeights: str = ""
    emphysemaThreshold: Annotated[float, WithinRange(-1000, -800)] = -950.0
    qcProfile: Annotated[str, Choice(list(QC_PROFILES))] = "default"
    configFile: str = ""
    modelPath: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    explainMethods: str = "gradcam,attention"
    outputSegmentation: slicer.vtkMRMLSegmentationNode


#
# EmphysemaXAIWidget
#


class EmphysemaXAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """GUI: binds widgets to the parameter node and calls the logic; no processing here."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None  # EmphysemaXAILib.app.background.BackgroundAnalysis of the running analysis
        self._timer = None
        self._runInput = None
        self._resultNodes = {}

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/EmphysemaXAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.notClinicalLabel.text = NOT_CLINICAL
        self.ui.sampleComboBox.addItems([_("Generated phantom (medium, 12% mixed emphysema)"),
                                         _("CTChest (Slicer sample data)")])
        self.logic = EmphysemaXAILogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.recomputeButton.connect("clicked(bool)", self.onRecomputeButton)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSampleButton)
        self.ui.dependenciesButton.connect("clicked(bool)", self.onDependenciesButton)
        self.ui.attributionMethodComboBox.connect("currentIndexChanged(int)", self.onAttributionDisplayChanged)
        self.ui.attributionOpacitySlider.connect("valueChanged(double)", self.onAttributionDisplayChanged)
        self.ui.attributionThresholdSlider.connect("valueChanged(double)", self.onAttributionDisplayChanged)
        self.ui.configFileLineEdit.connect("editingFinished()", self.onConfigFileChosen)
        self.ui.cancelButton.enabled = False
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.cancel()
        if getattr(self, "_timer", None) is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        ready = bool(self._job is None and self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = ready
        self.ui.recomputeButton.enabled = bool(ready and self._parameterNode.outputSegmentation)
        self.ui.applyButton.toolTip = _("Run the analysis") if ready else _("Select a chest CT volume")

    def _poll(self) -> None:
        """GUI timer: show queued progress; when the worker is done, show results or the error."""
        import time

        job = self._job
        if job.running:
            time.sleep(0.02)  # Slicer's Qt loop does not release the GIL: give the worker a turn
        for fraction, message in job.progress():
            self.ui.progressBar.value = int(100 * fraction)
            self.ui.logTextBrowser.append(message)
        if job.running:
            return
        self._timer.stop()
        self._job = None
        self.ui.cancelButton.enabled = False
        try:
            if job.cancelled:
                self.ui.logTextBrowser.append(_("Cancelled."))
            elif job.error is not None:
                slicer.util.errorDisplay(_("The analysis failed: ") + str(job.error))
            elif self._parameterNode is not None and slicer.mrmlScene.IsNodePresent(self._runInput):
                with slicer.util.tryWithErrorDisplay(_("Could not show the results."), waitCursor=True):
                    nodes = self.logic.show(job.result, self._runInput)
                    self.logic.showResults(nodes)
                    self._resultNodes = nodes
                    self.ui.attributionMethodComboBox.clear()
                    self.ui.attributionMethodComboBox.addItems(list(nodes.get("attributions", {})))
                    self._parameterNode.outputSegmentation = nodes.get("segmentation",
                                                                       self._parameterNode.outputSegmentation)
                    self.ui.resultsTextBrowser.setPlainText(self.logic.formatResult(job.result))
        except Exception:  # already shown to the user by tryWithErrorDisplay
            logging.exception("EmphysemaXAI: showing results failed")
        finally:
            self._checkCanApply()

    def _run(self, useEditedSegmentation: bool) -> None:
        """Read the inputs on the GUI thread, analyse in a worker thread (Slicer stays responsive;
        numpy, SciPy and torch release the GIL), build the result nodes on the GUI thread."""
        import qt

        from EmphysemaXAILib.app.background import BackgroundAnalysis

        p = self._parameterNode
        segmentation = p.outputSegmentation if useEditedSegmentation else p.inputSegmentation
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not read the inputs."), waitCursor=True):
                ct, mask = self.logic.prepare(p.inputVolume, segmentation)
                options = self.logic.optionsFromParameterNode(p)
        except Exception:  # already shown to the user
            return
        self._runInput = p.inputVolume
        self.ui.logTextBrowser.clear()
        self.ui.progressBar.value = 0
        self.ui.applyButton.enabled = self.ui.recomputeButton.enabled = False
        self.ui.cancelButton.enabled = True
        self._job = BackgroundAnalysis(ct, options, lung_mask=mask).start()
        self._checkCanApply()
        self._timer = qt.QTimer()
        self._timer.timeout.connect(self._poll)
        self._timer.start(100)

    def onApplyButton(self) -> None:
        self._run(useEditedSegmentation=False)

    def onRecomputeButton(self) -> None:
        self._run(useEditedSegmentation=True)

    def onCancelButton(self) -> None:
        if self._job is not None:
            self._job.cancel()
        self.ui.logTextBrowser.append(_("Cancelling after the current step..."))

    def onLoadSampleButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample."), waitCursor=True):
            node = self.logic.loadSample(generated=self.ui.sampleComboBox.currentIndex == 0)
            self._parameterNode.inputVolume = node

    def onAttributionDisplayChanged(self, *_args) -> None:
        """Switch the attribution overlay / 3D rendering to the chosen method, opacity, threshold."""
        method = self.ui.attributionMethodComboBox.currentText
        if method and method in self._resultNodes.get("attributions", {}):
            self.logic.showAttribution(self._resultNodes, method, opacity=self.ui.attributionOpacitySlider.value,
                                       threshold=self.ui.attributionThresholdSlider.value)

    def onConfigFileChosen(self) -> None:
        """Show the chosen config file's values in the panel (they then run unless changed)."""
        path = self.ui.configFileLineEdit.text.strip()
        if not path or self._parameterNode is None:
            return
        from EmphysemaXAILib.options import options_from_toml, panel_values

        with slicer.util.tryWithErrorDisplay(_("Could not read the settings file."), waitCursor=True):
            for name, value in panel_values(options_from_toml(path)).items():
                setattr(self._parameterNode, name, value)

    def onDependenciesButton(self) -> None:
        missing = self.logic.missingDependencies()
        if not missing:
            slicer.util.infoDisplay(_("All dependencies are installed."))
            return
        if slicer.util.confirmOkCancelDisplay(_("Install: ") + ", ".join(missing) + "?"):
            with slicer.util.tryWithErrorDisplay(_("Installation failed."), waitCursor=True):
                self.logic.installDependencies(missing)


#
# EmphysemaXAILogic
#


class EmphysemaXAILogic(ScriptedLoadableModuleLogic):
    """Computation entry points; usable from the Python console without the GUI."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return EmphysemaXAIParameterNode(super().getParameterNode())

    # -- dependencies

    @staticmethod
    def missingDependencies():
        """Names of the required packages (Resources/requirements.txt) that do not import here."""
        from EmphysemaXAILib.mrml.dependencies import missing_packages

        return missing_packages(REQUIREMENTS_FILE)

    @staticmethod
    def installDependencies(names):
        """Install missing packages: torch through Slicer's PyTorch extension, the others with pip."""
        from EmphysemaXAILib.mrml.dependencies import install_packages

        install_packages(REQUIREMENTS_FILE, names)

    # -- data

    @staticmethod
    def loadSample(generated=True):
        """A generated medium phantom (12% mixed emphysema) or Slicer's CTChest sample."""
        if not generated:
            import SampleData

            return SampleData.SampleDataLogic().downloadSample("CTChest")
        from EmphysemaXAILib.mrml.module_logic import load_phantom

        return load_phantom(slicer.mrmlScene)

    # -- analysis

    @staticmethod
    def prepare(inputVolume, segmentation=None):
        """(CTVolume, lung labels or None) from the nodes: runs on the GUI thread (MRML access)."""
        from EmphysemaXAILib.mrml.module_logic import case_inputs

        return case_inputs(inputVolume, segmentation, getattr(slicer, "dicomDatabase", None))

    @staticmethod
    def optionsFromParameterNode(parameterNode):
        """The run's ``AnalysisOptions``: defaults < the config file < the panel's values."""
        from EmphysemaXAILib.options import options_from_panel

        values = {name: getattr(parameterNode, name) for name in PANEL_FIELDS}
        return options_from_panel(values, parameterNode.configFile or None)

    @staticmethod
    def analyze(ct, mask=None, options=None, progress=None, cancel=None):
        """QC, lungs, densitometry, CNN severity and explanations of a CTVolume (no MRML: safe in
        a worker thread). ``options``: ``EmphysemaXAILib.options.AnalysisOptions`` (None: defaults,
        the shipped model)."""
        from EmphysemaXAILib.pipeline import analyze_case

        return analyze_case(ct, options, lung_mask=mask, progress=progress, cancel=cancel)

    @staticmethod
    def show(case, inputVolume):
        """Result nodes beside the input volume (segmentation, LAA overlay, tables, 3D)."""
        from EmphysemaXAILib.mrml.scene_export import build_case_scene

        if case.excluded:
            return {}
        return build_case_scene(case, slicer.mrmlScene, slicer.app.applicationLogic(), ct_node=inputVolume)

    def process(self, inputVolume, segmentation=None, options=None, progress=None, cancel=None, show=True):
        """Analyse a chest CT volume node: QC, lungs, densitometry, CNN; results into the scene.

        Args:
            inputVolume: ``vtkMRMLScalarVolumeNode`` in HU.
            segmentation: optional ``vtkMRMLSegmentationNode`` with "Right lung" / "Left lung"
                segments (drawn or edited by the user) replacing the engine.
            options: ``EmphysemaXAILib.options.AnalysisOptions``, e.g.
                ``build_options("settings.toml", engine="classical")`` (None: the defaults).
            progress: ``progress(step, fraction, message)``; cancel: returns True to stop.
        Returns:
            ``{"case": CaseResult, "nodes": {role: node}}``.
        """
        ct, mask = self.prepare(inputVolume, segmentation)
        case = self.analyze(ct, mask, options, progress=progress, cancel=cancel)
        nodes = self.show(case, inputVolume) if show else {}
        if show:
            self.showResults(nodes)
        logging.info("EmphysemaXAI: %s", case.qct.qct_severity if case.qct else case.qc.errors)
        return {"case": case, "nodes": nodes}

    def processDirectory(self, folder, outputFolder, options=None, scene=True, report=True, workers=1):
        """Analyse every case under ``folder`` into ``outputFolder`` (cohort.csv, cases/, montage)
        with ``options`` (``AnalysisOptions``; None: the defaults)."""
        from EmphysemaXAILib.app.batch import run_batch

        return run_batch(folder, outputFolder, options, workers=workers, scene=scene, report=report, progress=False)

    @staticmethod
    def showResults(nodes):
        """Put the QCT table in the layout, the LAA overlay and the pattern map in the slice views."""
        from EmphysemaXAILib.mrml.module_logic import show_results

        show_results(nodes, slicer.app.layoutManager(), slicer.app.applicationLogic())

    @staticmethod
    def showAttribution(nodes, method, opacity=0.6, threshold=0.2):
        """Show one method's attribution: slice-view foreground at ``opacity``, values under
        ``threshold`` x its display top transparent, its 3D rendering on and the others off."""
        from EmphysemaXAILib.mrml.module_logic import show_attribution

        show_attribution(nodes, method, slicer.app.applicationLogic(), opacity=opacity, threshold=threshold)

    @staticmethod
    def formatResult(case) -> str:
        """The case as plain text for the results box (shared with the command line's wording)."""
        from EmphysemaXAILib.app.text import case_lines

        return "\n".join(case_lines(case))


#
# EmphysemaXAITest
#


class EmphysemaXAITest(ScriptedLoadableModuleTest):
    """Self-test: a generated phantom through the logic, asserting measured values."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_AnalysisOfGeneratedPhantom()

    def test_AnalysisOfGeneratedPhantom(self):
        from EmphysemaXAILib.mrml.volumes import volume_node_from_ct
        from EmphysemaXAILib.phantom import PhantomParams, generate_phantom

        self.delayDisplay("Generating a phantom with 20% centrilobular emphysema")
        phantom = generate_phantom(PhantomParams(extent_pct=20, pattern="centrilobular", size="small", seed=1))
        node = volume_node_from_ct(slicer.mrmlScene, phantom.ct, "phantom")
        from EmphysemaXAILib.options import AnalysisOptions

        result = EmphysemaXAILogic().process(node, options=AnalysisOptions(engine="classical"))
        case = result["case"]
        self.assertEqual(case.qc.errors, [])
        self.assertAlmostEqual(case.qct.region("whole")["laa950_pct"], phantom.truth["extent_pct"], delta=2.0)
        self.assertEqual(case.qct.qct_severity["class"], "moderate")
        self.assertIsNotNone(result["nodes"].get("segmentation"))
        self.delayDisplay("Test passed")
