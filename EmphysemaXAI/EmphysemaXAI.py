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

import ctk
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
            "shows over the CT with the lungs outlined (translucent in 3D), tables open in the layout. "
            "<b>Display</b> switches to the pattern map or an explanation map.</li>"
            "<li>Edit the lungs in the Segment Editor if needed and press <b>Recompute from "
            "edited segmentation</b>.</li></ol>") + "<p>" + NOT_CLINICAL + "</p>"  # a whole sentence, not a fragment
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, SimpleITK, pydicom, PyTorch, MONAI, captum and lungmask. Densitometry "
            "conventions follow the Chest Imaging Platform.")
        # the Sample Data module lists the demo phantom once the application has started
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add "EmphysemaXAIPhantom" to the Sample Data module (category "Emphysema XAI"): a medium
    chest phantom with 12 % mixed emphysema, generated on request (no download, no licence
    question), so a teacher starts in one click. Slicer 5.10's Sample Data calls a source's
    ``customDownloader(source)`` when its button is pressed (SampleData.py)."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="Emphysema XAI", sampleName="EmphysemaXAIPhantom", uris=[], fileNames=[],
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "EmphysemaXAI.png"),
        customDownloader=lambda source: EmphysemaXAILogic.loadSample(generated=True))


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
    writeDicom - also write a DICOM SEG + SR of the results (imported into Slicer's DICOM database).
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
    writeDicom: bool = False


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
        self._run = None  # EmphysemaXAILib.mrml.module_logic.AnalysisRun: the analysis process running
        self._skippedNote = ""  # what the last Apply runs without (a declined or failed install)
        self._timer = None
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
        self.ui.showComboBox.connect("currentIndexChanged(int)", self.onDisplayChanged)
        self.ui.overlayOpacitySlider.connect("valueChanged(double)", self.onDisplayChanged)
        self.ui.attributionThresholdSlider.connect("valueChanged(double)", self.onDisplayChanged)
        self.ui.configFileLineEdit.connect("editingFinished()", self.onConfigFileChosen)
        self.ui.loadResultsButton.connect("clicked(bool)", self.onLoadResultsButton)
        self.ui.downloadWeightsButton.connect("clicked(bool)", self.onDownloadWeightsButton)
        self.ui.resultsFolderPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.cancelButton.enabled = False
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._run is not None:
            self.logic.cancelAnalysis(self._run)
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
        ready = bool(self._run is None and self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = ready
        self.ui.recomputeButton.enabled = bool(ready and self._parameterNode.outputSegmentation)
        self.ui.applyButton.toolTip = _("Run the analysis") if ready else _("Select a chest CT volume")

    def _poll(self) -> None:
        """GUI timer: stream the process's lines into the log and progress bar; when it has
        ended, load its results into the scene (main thread) or show and log its error."""
        run = self._run
        for line in run.process.poll():
            if line.fraction is not None:
                self.ui.progressBar.value = int(100 * line.fraction)
            if line.text.strip():
                self.ui.logTextBrowser.append(line.text)
                logging.info("EmphysemaXAI: %s", line.text)
        if run.process.running:
            return
        self._timer.stop()
        self._run = None
        self.ui.cancelButton.enabled = False
        try:
            if not slicer.mrmlScene.IsNodePresent(run.volume_node):
                self.logic.discardAnalysis(run)
                return
            with slicer.util.tryWithErrorDisplay(_("The analysis failed."), waitCursor=True):
                self._showNodes(self.logic.finishAnalysis(run))
        except Exception:  # shown to the user by tryWithErrorDisplay; logged here
            logging.exception("EmphysemaXAI: the analysis failed")
        finally:
            self._checkCanApply()

    def _showNodes(self, nodes) -> None:
        """Show result nodes (slice views, 3D, tables) and fill the results panel."""
        self.logic.showResults(nodes)
        self._resultNodes = nodes
        # refilled with its signals blocked: a refill must not switch the views (it used to put the
        # first attribution map over the LAA map the help promises)
        wasBlocked = self.ui.showComboBox.blockSignals(True)
        self.ui.showComboBox.clear()
        self.ui.showComboBox.addItems(self.logic.layerChoices(nodes))
        self.ui.showComboBox.currentIndex = 0
        self.ui.showComboBox.blockSignals(wasBlocked)
        self.ui.overlayOpacitySlider.value = 0.6
        if nodes.get("segmentation") is not None and self._parameterNode is not None:
            self._parameterNode.outputSegmentation = nodes["segmentation"]
        self.ui.resultsTextBrowser.setPlainText(self.logic.formatNodes(nodes))

    def _start(self, useEditedSegmentation: bool) -> None:
        """Check what the options need, export the inputs (main thread: MRML), start the analysis
        process and poll it on a timer (Slicer stays responsive; Cancel stops it within 2 s)."""
        import qt

        p = self._parameterNode
        segmentation = p.outputSegmentation if useEditedSegmentation else p.inputSegmentation
        if not useEditedSegmentation and segmentation is None and p.inputVolume is not None:
            edited = self.logic.editedResultSegmentation(p.inputVolume)
            if edited is not None:              # Apply would refill the lungs the user edited: ask first
                choice = self._askAboutEdits()
                if choice is None:
                    return
                segmentation = edited if choice == "recompute" else None
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not start the analysis."), waitCursor=True):
                options = self.logic.optionsFromParameterNode(p)
                options = self._checkDependencies(options, dicom=p.writeDicom)
                if options is None:
                    return
                self._run = self.logic.startAnalysis(p.inputVolume, segmentation, options, dicom=p.writeDicom)
        except Exception:  # shown to the user by tryWithErrorDisplay; logged here
            logging.exception("EmphysemaXAI: could not start the analysis")
            return
        self.ui.logTextBrowser.clear()
        if self._skippedNote:                 # what runs without a package the user did not install
            self.ui.logTextBrowser.append(self._skippedNote)
        self.ui.progressBar.value = 0
        self.ui.applyButton.enabled = self.ui.recomputeButton.enabled = False
        self.ui.cancelButton.enabled = True
        self._checkCanApply()
        self._timer = qt.QTimer()
        self._timer.timeout.connect(self._poll)
        self._timer.start(200)

    def _askAboutEdits(self):
        """The lungs of this CT were edited since the last run: "recompute" (from the edited
        lungs), "replace" (run the engine again, the edits are discarded) or None (cancel)."""
        import qt

        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setWindowTitle(_("EmphysemaXAI: edited lungs"))
        box.setIcon(qt.QMessageBox.Question)
        box.setText(_("The lungs of this CT were edited after the last run. Apply would segment the lungs "
                      "again and replace your edits."))
        recompute = box.addButton(_("Recompute from the edited lungs"), qt.QMessageBox.AcceptRole)
        replace = box.addButton(_("Segment again and discard the edits"), qt.QMessageBox.DestructiveRole)
        box.addButton(qt.QMessageBox.Cancel)
        box.setDefaultButton(recompute)
        box.exec_()
        clicked = box.clickedButton()
        return "recompute" if clicked == recompute else "replace" if clicked == replace else None

    def _checkDependencies(self, options, dicom=False):
        """Offer to install what ``options`` need and is missing (one confirmation, one message).
        Returns the options to run with, or None when a package the user explicitly chose a
        feature for (engine lungmask, a model folder, DICOM results) is still missing. Anything
        else runs without it (QCT without torch, the classical engine without lungmask, an
        explanation without its package skipped): the message and the log say what was left out."""
        needs = self.logic.missingFor(options, dicom=dicom)
        self._skippedNote = ""
        if not needs:
            return options
        self.ui.applyButton.enabled = self.ui.recomputeButton.enabled = False   # no second run while installing
        try:
            result = self.logic.installFor(needs)
        finally:
            self._checkCanApply()
        logging.info("EmphysemaXAI: %s", result.message)
        missing = {n.package for n in needs} - set(result.installed)
        blocking = [n.package for n in needs if n.required and n.package in missing]
        if blocking:
            slicer.util.warningDisplay(result.message + "\n\n" + _("Not started: {packages} is needed by the chosen "
                                                                    "settings.").format(packages=", ".join(blocking)))
            return None
        if missing:
            self._skippedNote = result.message
        (slicer.util.infoDisplay if result.ok and not result.cancelled else slicer.util.warningDisplay)(result.message)
        return options

    def onApplyButton(self) -> None:
        self._start(useEditedSegmentation=False)

    def onRecomputeButton(self) -> None:
        self._start(useEditedSegmentation=True)

    def onCancelButton(self) -> None:
        if self._run is None:
            return
        self._timer.stop()
        run, self._run = self._run, None
        self.logic.cancelAnalysis(run)  # returns within 2 s, the interpreter gone
        self.ui.logTextBrowser.append(_("Cancelled."))
        self.ui.progressBar.value = 0
        self.ui.cancelButton.enabled = False
        self._checkCanApply()

    def onLoadResultsButton(self) -> None:
        """Load an analyze / batch output folder onto the selected CT (or its scene's CT)."""
        folder = self.ui.resultsFolderPathLineEdit.currentPath
        case = self.ui.resultsCaseLineEdit.text.strip() or None
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not load the results."), waitCursor=True):
                nodes = self.logic.loadResults(folder, self._parameterNode.inputVolume, case)
                if self._parameterNode.inputVolume is None:
                    self._parameterNode.inputVolume = nodes["ct"]
                self._showNodes(nodes)
        except Exception:  # shown by tryWithErrorDisplay; logged here
            logging.exception("EmphysemaXAI: could not load results from %s", folder)

    def onDownloadWeightsButton(self) -> None:
        """Fetch lungmask's R231 weights into the torch hub cache (engine auto then finds them)."""
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not download lungmask's weights."), waitCursor=True):
                paths, warnings = self.logic.downloadLungmaskWeights()
                text = _("lungmask weights: {paths}").format(paths=", ".join(str(p) for p in paths.values()))
                logging.info("EmphysemaXAI: %s", text)
                slicer.util.infoDisplay("\n".join([text, *warnings]))
        except Exception:  # shown by tryWithErrorDisplay; logged here
            logging.exception("EmphysemaXAI: lungmask weights download failed")

    def onLoadSampleButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample."), waitCursor=True):
            node = self.logic.loadSample(generated=self.ui.sampleComboBox.currentIndex == 0)
            self._parameterNode.inputVolume = node

    def onDisplayChanged(self, *_args) -> None:
        """Show the chosen layer (LAA map, pattern map or an attribution) at the chosen opacity."""
        layer = self.ui.showComboBox.currentText
        if layer and layer in self.logic.layerChoices(self._resultNodes):
            self.logic.showLayer(self._resultNodes, layer, opacity=self.ui.overlayOpacitySlider.value,
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
        """Install every optional package of Resources/requirements.txt that is missing."""
        missing = self.logic.missingDependencies()
        if not missing:
            slicer.util.infoDisplay(_("All dependencies are installed."))
            return
        try:
            with slicer.util.tryWithErrorDisplay(_("Installation failed."), waitCursor=True):
                result = self.logic.installDependencies(missing)
                logging.info("EmphysemaXAI: %s", result.message)
                (slicer.util.infoDisplay if result.ok else slicer.util.warningDisplay)(result.message)
        except Exception:  # shown by tryWithErrorDisplay; logged here
            logging.exception("EmphysemaXAI: installation failed")


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
    def installDependencies(names, needs=()):
        """Install packages (asks for confirmation): torch through Slicer's PyTorch extension with
        a version requirement, the others with pip under a constraints file that keeps every
        package Slicer ships. Never raises for a package that fails: see the result's message."""
        from EmphysemaXAILib.mrml.dependencies import install_for

        return install_for(REQUIREMENTS_FILE, names, needs=needs)

    @staticmethod
    def missingFor(options, dicom=False):
        """What ``options`` need (``EmphysemaXAILib.packages.Need``) that is not installed (the
        analysis process writes no report: the module shows the results; ``dicom``: highdicom)."""
        from EmphysemaXAILib.packages import missing_for

        return missing_for(options, dicom=dicom)

    def installFor(self, needs):
        """Install what ``needs`` list (see :meth:`installDependencies`)."""
        return self.installDependencies([n.package for n in needs], needs=needs)

    @staticmethod
    def downloadLungmaskWeights():
        """lungmask's R231 weights into the torch hub cache: ({model: path}, warnings)."""
        from EmphysemaXAILib.mrml.dependencies import download_lungmask_weights

        return download_lungmask_weights()

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
    def show(case, inputVolume, segmentation=None):
        """Result nodes beside the input volume (segmentation, LAA overlay, tables, 3D); a re-run
        on the same volume updates its earlier result nodes; ``segmentation`` (the lungs the case
        was measured in, the user's) is kept instead of a new one."""
        from EmphysemaXAILib.app.case_layers import layers_from_result
        from EmphysemaXAILib.mrml.scene_export import add_case_nodes

        if case.excluded:
            return {}
        return add_case_nodes(slicer.mrmlScene, inputVolume, layers_from_result(case), slicer.app.applicationLogic(),
                              segmentation_node=segmentation)

    def process(self, inputVolume, segmentation=None, options=None, progress=None, cancel=None, show=True):
        """Analyse a chest CT volume node in this process (blocking; the panel runs a child
        process instead): QC, lungs, densitometry, CNN; results into the scene.

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
        nodes = self.show(case, inputVolume, segmentation) if show else {}
        if show:
            self.showResults(nodes)
        logging.info("EmphysemaXAI: %s", case.qct.qct_severity if case.qct else case.qc.errors)
        return {"case": case, "nodes": nodes}

    @staticmethod
    def processDirectory(folder, outputFolder, options=None, scene=None, report=None, workers=1, resume=False):
        """Analyse every case under ``folder`` into ``outputFolder`` (cohort.csv, cases/, montage)
        with ``options`` (``AnalysisOptions``; None: the defaults), as the command line's
        ``batch`` in its own process: the user's scene, views and layout are not touched.
        ``scene`` / ``report`` None: what can be written here (in Slicer no per-case scene.mrb:
        load a case with :meth:`loadResults`; report.html when matplotlib is installed); what is
        left out is logged first. Slicer stays responsive: a progress dialog shows the batch's
        last line and its Cancel stops it (finished cases are kept; ``resume=True`` finishes
        the cohort). Returns cohort.csv's rows (dicts). ``workers`` > 1 runs the cases on a local
        Dask cluster and needs dask.distributed in Slicer's Python (Resources/requirements.txt;
        without it the run stops before it starts, saying so)."""
        from EmphysemaXAILib.mrml.module_logic import process_directory

        dialog = slicer.util.createProgressDialog(labelText=_("EmphysemaXAI batch: starting"), maximum=0,
                                                  windowTitle=_("EmphysemaXAI batch"))

        def poll(lines):
            for line in lines:
                if line.text.strip():
                    dialog.labelText = line.text.strip()[:200]
                    slicer.util.showStatusMessage("EmphysemaXAI: " + line.text.strip())
            slicer.app.processEvents()
            return dialog.wasCanceled

        try:
            return process_directory(folder, outputFolder, options, workers=workers, scene=scene, report=report,
                                     resume=resume, poll=poll)
        finally:
            dialog.close()

    @staticmethod
    def startAnalysis(inputVolume, segmentation, options, dicom=False):
        """Start the analysis of a volume node in a child process (``AnalysisRun``); poll
        ``run.process``, then :meth:`finishAnalysis`. ``dicom``: also a DICOM SEG + SR."""
        from EmphysemaXAILib.mrml.module_logic import launch_analysis

        return launch_analysis(inputVolume, segmentation, options, getattr(slicer, "dicomDatabase", None),
                               dicom=dicom)

    @staticmethod
    def finishAnalysis(run):
        """The finished run's result nodes in the scene (raises its one-line error on failure)."""
        from EmphysemaXAILib.mrml.module_logic import finish_analysis

        database = getattr(slicer, "dicomDatabase", None)
        dicomImport = None
        if database is not None and database.isOpen:
            from DICOMLib import DICOMUtils

            dicomImport = lambda folder: DICOMUtils.importDicom(folder, database, copyFiles=True)  # noqa: E731
        nodes = finish_analysis(run, slicer.mrmlScene, slicer.app.applicationLogic(), dicom_import=dicomImport)
        if run.dicom_results:
            logging.info("EmphysemaXAI: DICOM SEG + SR %s", "imported into the DICOM database"
                         if run.dicom_results["imported"] else f"written to {run.dicom_results['folder']}")
        return nodes

    @staticmethod
    def cancelAnalysis(run):
        """Stop a running analysis (within 2 s) and remove its files."""
        from EmphysemaXAILib.mrml.module_logic import cancel_analysis

        cancel_analysis(run)

    @staticmethod
    def discardAnalysis(run):
        """Drop a finished run whose CT left the scene (its files are removed)."""
        import shutil

        shutil.rmtree(run.work_dir, ignore_errors=True)

    @staticmethod
    def loadResults(folder, inputVolume=None, caseId=None):
        """An ``analyze`` or ``batch`` output folder's results in the scene, onto ``inputVolume``
        (None: the CT inside the case's scene.mrb); a batch folder also gives its cohort table."""
        from EmphysemaXAILib.mrml.load_results import load_results

        return load_results(folder, slicer.mrmlScene, slicer.app.applicationLogic(), ct_node=inputVolume,
                            case_id=caseId)

    @staticmethod
    def showResults(nodes):
        """Put the QCT table in the layout, the LAA overlay and the pattern map in the slice views."""
        from EmphysemaXAILib.mrml.module_logic import show_results

        show_results(nodes, slicer.app.layoutManager(), slicer.app.applicationLogic())

    @staticmethod
    def editedResultSegmentation(volumeNode):
        """The CT's result "Lungs" segmentation when the user edited it since a run wrote it, else None."""
        from EmphysemaXAILib.mrml.module_logic import edited_result_segmentation

        return edited_result_segmentation(slicer.mrmlScene, volumeNode)

    @staticmethod
    def layerChoices(nodes):
        """What the results can show: "LAA map", "Pattern map", then each explanation method."""
        from EmphysemaXAILib.mrml.views import layer_choices

        return layer_choices(nodes)

    @staticmethod
    def showLayer(nodes, layer, opacity=0.6, threshold=None):
        """Show one layer in the slice views at ``opacity`` and its rendering alone in 3D (an
        attribution's values under ``threshold`` x its display top transparent)."""
        from EmphysemaXAILib.mrml.views import show_layer

        show_layer(nodes, layer, opacity=opacity, threshold=threshold)

    @staticmethod
    def formatResult(case) -> str:
        """The case as plain text for the results box (shared with the command line's wording)."""
        from EmphysemaXAILib.app.text import case_lines

        return "\n".join(case_lines(case))

    @staticmethod
    def formatNodes(nodes) -> str:
        """The results text of loaded result nodes (their case's summary)."""
        from EmphysemaXAILib.app.text import summary_lines

        return "\n".join(summary_lines(nodes["summary"])) if "summary" in nodes else ""


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
        import importlib.util

        from EmphysemaXAILib.options import AnalysisOptions

        withModel = importlib.util.find_spec("torch") is not None
        if not withModel:
            self.delayDisplay("torch is not installed: testing quality control, lungs and densitometry only "
                              "(install the dependencies to test the CNN too)")
        options = AnalysisOptions(engine="classical", model="auto" if withModel else "none")
        result = EmphysemaXAILogic().process(node, options=options)
        case = result["case"]
        self.assertEqual(case.qc.errors, [])
        self.assertAlmostEqual(case.qct.region("whole")["laa950_pct"], phantom.truth["extent_pct"], delta=2.0)
        self.assertEqual(case.qct.qct_severity["class"], "moderate")
        self.assertIsNotNone(result["nodes"].get("segmentation"))
        self.assertEqual(case.severity is not None, withModel)
        count = slicer.mrmlScene.GetNumberOfNodes()
        EmphysemaXAILogic().process(node, options=options)     # a re-run updates the same result nodes
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        self.delayDisplay("Test passed" + ("" if withModel else " (QCT only: torch is not installed)"))
