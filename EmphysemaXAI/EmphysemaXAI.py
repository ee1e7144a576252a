"""EmphysemaXAI: explainable emphysema assessment on chest CT (3D Slicer scripted module).

Module, parameter node, Widget, Logic and Test in the order of Slicer's template. The widget only
binds the GUI to the parameter node and calls the logic; the logic's ``process`` is what a
researcher calls from Slicer's Python console. All computation lives in ``EmphysemaXAILib``
(core + MRML logic), which also runs headless (``emphysema-xai`` command line).
"""
import logging
from typing import Annotated

import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

NOT_CLINICAL = "Research and teaching use only: not a medical device, not for clinical decisions."


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
            "Explainable emphysema assessment on chest CT: quality control, lung segmentation, "
            "CT densitometry (%LAA-950, Perc15), a severity CNN with spatial attention and "
            "attribution maps. " + NOT_CLINICAL)
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, SimpleITK, pydicom, PyTorch, MONAI, captum and lungmask.")


#
# EmphysemaXAIParameterNode
#


@parameterNodeWrapper
class EmphysemaXAIParameterNode:
    """The module's parameters (names match ``SlicerParameterName`` in the .ui file).

    inputVolume - the chest CT (HU) to check.
    qcProfile - ``default`` or ``seeds`` (adds the seed papers' exclusion rules).
    """

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    qcProfile: Annotated[str, Choice(["default", "seeds"])] = "default"


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

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/EmphysemaXAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.notClinicalLabel.text = NOT_CLINICAL
        self.logic = EmphysemaXAILogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
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
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Check the quality of the CT volume") if ready else _(
            "Select a CT volume")

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Quality control failed."), waitCursor=True):
            report = self.logic.process(self._parameterNode.inputVolume, self._parameterNode.qcProfile)
            self.ui.resultsTextBrowser.setPlainText(self.logic.formatReport(report))


#
# EmphysemaXAILogic
#


class EmphysemaXAILogic(ScriptedLoadableModuleLogic):
    """Computation entry points; usable from the Python console without the GUI."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return EmphysemaXAIParameterNode(super().getParameterNode())

    def process(self, inputVolume, qcProfile="default"):
        """Run quality control on a CT volume node.

        Args:
            inputVolume: ``vtkMRMLScalarVolumeNode`` holding HU.
            qcProfile: ``default`` or ``seeds``.

        Returns:
            ``EmphysemaXAILib.qc.QCReport`` (errors, warnings, measures).
        """
        from EmphysemaXAILib.mrml.volumes import ct_from_volume_node
        from EmphysemaXAILib.qc import run_qc

        if not inputVolume:
            raise ValueError("Input volume is invalid: select a CT volume")
        ct = ct_from_volume_node(inputVolume)
        report = run_qc(ct, profile=qcProfile)
        logging.info("EmphysemaXAI QC: %d errors, %d warnings", len(report.errors), len(report.warnings))
        return report

    @staticmethod
    def formatReport(report) -> str:
        """The QC report as plain text for the results box."""
        lines = [f"ERROR: {e}" for e in report.errors] + [f"warning: {w}" for w in report.warnings]
        if not lines:
            lines.append("no problems found")
        lines.append("")
        lines += [f"{key}: {value}" for key, value in report.measures.items()]
        lines += ["", NOT_CLINICAL]
        return "\n".join(lines)


#
# EmphysemaXAITest
#


class EmphysemaXAITest(ScriptedLoadableModuleTest):
    """Self-test: a generated sample chest CT through the logic, asserting measured values."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_QualityControlOnSample()

    def test_QualityControlOnSample(self):
        from EmphysemaXAILib.mrml.volumes import volume_node_from_ct
        from EmphysemaXAILib.sample import make_sample_ct

        self.delayDisplay("Generating the sample chest CT")
        ct = make_sample_ct(seed=0, noise_hu=20.0, blood_hu=300.0)
        node = volume_node_from_ct(slicer.mrmlScene, ct, "SampleChestCT")
        report = EmphysemaXAILogic().process(node)
        self.assertEqual(report.errors, [])
        self.assertAlmostEqual(report.measures["noise_hu"], 20.0, delta=2.0)
        self.assertTrue(any("contrast" in w for w in report.warnings))
        self.delayDisplay("Test passed")
