"""A headless stand-in for the Slicer application: real MRML scene and module logics.

``bootstrap()`` builds what ``qSlicerCoreApplication`` builds and publishes it the same way
(``slicer.mrmlScene``, ``slicer.app``, ``slicer.modules.<name>.logic()``), so the MRML logic of
this package and much of ``slicer.util`` run unchanged on the ``slicer-core`` wheel. Inside the
Slicer application ``bootstrap()`` is never called: the application's own objects are used.

Measured pitfalls handled here: the colour logic needs the application logic before the scene
and a share directory with a ``ColorFiles`` folder; segmentations need their module logic
before a segment gets a labelmap; reading ``.mrb`` needs the remote-IO and data-IO logics;
volume rendering needs presets (the wheel ships no ``presets.xml``; without the presets that
``CreateDefaultVolumeRenderingNodes`` copies, it crashes on a uint8 volume); the default
label-map colour table (GenericColors) is provided as an unsaved stand-in.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import types

import slicer
import slicer.util
import vtk

_STATE: dict = {}
#: (process id, folder) of the scratch folders ``bootstrap`` made in the temporary directory;
#: their names carry the process id, so a batch can remove those of a worker it had to kill.
_SCRATCH: list = []
_EXIT_HOOKS: set = set()
SCRATCH_PREFIX = "emphysema-xai-mrml-"

#: Slicer file types the stand-in IO manager handles: (node class, storage node class).
NODE_FILE_TYPES = {
    "VolumeFile": ("vtkMRMLScalarVolumeNode", "vtkMRMLVolumeArchetypeStorageNode"),
    "SegmentationFile": ("vtkMRMLSegmentationNode", "vtkMRMLSegmentationStorageNode"),
    "TableFile": ("vtkMRMLTableNode", "vtkMRMLTableStorageNode"),
    "ModelFile": ("vtkMRMLModelNode", "vtkMRMLModelStorageNode"),
}
EXTENSIONS = ((".seg.nrrd", "SegmentationFile"), (".mrb", "SceneFile"), (".mrml", "SceneFile"),
              (".nrrd", "VolumeFile"), (".nii.gz", "VolumeFile"), (".nii", "VolumeFile"),
              (".mha", "VolumeFile"), (".tsv", "TableFile"), (".csv", "TableFile"),
              (".vtk", "ModelFile"), (".vtp", "ModelFile"), (".stl", "ModelFile"))


class _Module:
    """``slicer.modules.<name>``: just enough of qSlicerAbstractCoreModule (``logic()``)."""

    def __init__(self, name, logic):
        self.name = self.title = name
        self._logic = logic

    def logic(self):
        return self._logic


class _CoreIOManager:
    """The part of qSlicerCoreIOManager that ``slicer.util`` load / save functions call."""

    def __init__(self, scene):
        self.scene = scene

    def fileType(self, file_name):
        lower = str(file_name).lower()
        return next((kind for ext, kind in EXTENSIONS if lower.endswith(ext)), "NoFile")

    def fileWriterFileType(self, node):
        return next((kind for kind, (cls, _) in NODE_FILE_TYPES.items() if node.IsA(cls)), "NoFile")

    def loadNodes(self, file_type, properties, loaded=None, messages=None):
        file_name = str(properties["fileName"])
        if file_type == "SceneFile":
            clear = bool(properties.get("clear", False))
            if file_name.lower().endswith(".mrb"):
                return bool(self.scene.ReadFromMRB(file_name, clear, messages))
            self.scene.SetURL(file_name)
            return bool(self.scene.Connect() if clear else self.scene.Import())
        if file_type not in NODE_FILE_TYPES:
            return False
        node_class, storage_class = NODE_FILE_TYPES[file_type]
        if file_type == "VolumeFile" and properties.get("labelmap"):
            node_class = "vtkMRMLLabelMapVolumeNode"
        name = properties.get("name") or os.path.basename(file_name).split(".")[0]
        node = self.scene.AddNewNodeByClass(node_class, name)
        storage = self.scene.AddNewNodeByClass(storage_class)
        storage.SetFileName(file_name)
        node.SetAndObserveStorageNodeID(storage.GetID())
        if not storage.ReadData(node):
            self.scene.RemoveNode(node)
            self.scene.RemoveNode(storage)
            return False
        node.CreateDefaultDisplayNodes()
        if loaded is not None:
            loaded.AddItem(node)
        return True

    def saveNodes(self, file_type, properties, messages=None):
        file_name = str(properties["fileName"])
        if file_type == "SceneFile":
            if file_name.lower().endswith(".mrb"):
                return bool(self.scene.WriteToMRB(file_name, None, messages))
            self.scene.SetURL(file_name)
            self.scene.SetRootDirectory(os.path.dirname(file_name))
            return bool(self.scene.Commit())
        node = self.scene.GetNodeByID(properties["nodeID"])
        if node.GetStorageNode() is None:
            node.AddDefaultStorageNode()
        node.GetStorageNode().SetFileName(file_name)
        return bool(node.GetStorageNode().WriteData(node))


def in_slicer_application() -> bool:
    """True inside the 3D Slicer application (its own scene and logics exist)."""
    return hasattr(slicer, "app") and not isinstance(getattr(slicer, "app", None), types.SimpleNamespace) \
        and getattr(slicer, "mrmlScene", None) is not None


def remove_scratch(keep=None) -> None:
    """Remove the scratch folders this process's ``bootstrap`` made (all but ``keep``). Runs at
    exit (also in worker processes) and whenever a fresh scene retires the previous one; folders
    made by other processes (a forked parent's) are never touched."""
    pid = os.getpid()
    for entry in list(_SCRATCH):
        owner, folder = entry
        if owner != pid or folder == keep:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        _SCRATCH.remove(entry)


def _new_scratch() -> str:
    """A scratch folder for a headless scene, removed at exit (normal exit, error, or a signal
    the command line turns into an exception) and when the next fresh scene replaces it."""
    pid = os.getpid()
    folder = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{pid}-")
    _SCRATCH.append((pid, folder))
    if pid not in _EXIT_HOOKS:
        _EXIT_HOOKS.add(pid)
        atexit.register(remove_scratch)
        try:  # worker processes leave through multiprocessing, which skips atexit
            from multiprocessing import util

            util.Finalize(None, remove_scratch, exitpriority=0)
        except Exception:  # noqa: BLE001 - best effort; atexit still covers the main process
            pass
    return folder


def bootstrap(fresh: bool = False, temp_dir=None) -> tuple[slicer.vtkMRMLScene, slicer.vtkSlicerApplicationLogic]:
    """The scene and application logic; built once (``fresh=True`` builds a new pair, e.g. to
    reload a scene into a pristine scene). Inside Slicer, returns the application's own.

    Without ``temp_dir`` the scene gets a scratch folder in the temporary directory
    (``emphysema-xai-mrml-<pid>-*``), removed at exit or when a later fresh scene replaces this
    one; a ``temp_dir`` the caller gives is the caller's to remove."""
    if in_slicer_application():
        return slicer.mrmlScene, slicer.app.applicationLogic()
    if _STATE and not fresh:
        return _STATE["scene"], _STATE["app_logic"]
    if temp_dir is None:
        temp_dir = _new_scratch()
        remove_scratch(keep=temp_dir)  # the previous headless scene is retired
    temp_dir = str(temp_dir)
    os.makedirs(os.path.join(temp_dir, "Cache"), exist_ok=True)
    os.makedirs(os.path.join(temp_dir, "share", "ColorFiles"), exist_ok=True)

    scene = slicer.vtkMRMLScene()
    scene.SetRootDirectory(temp_dir)
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)

    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetTemporaryPath(temp_dir)
    app_logic.SetHomeDirectory(temp_dir)
    app_logic.SetShareDirectory("share")
    app_logic.SetSliceLogics(vtk.vtkCollection())
    app_logic.SetViewLogics(vtk.vtkCollection())
    app_logic.SetMRMLScene(scene)

    remote_io = slicer.vtkMRMLRemoteIOLogic()
    remote_io.GetCacheManager().SetRemoteCacheDirectory(os.path.join(temp_dir, "Cache"))
    data_io = slicer.vtkDataIOManagerLogic()
    data_io.SetMRMLApplicationLogic(app_logic)
    data_io.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    app_logic.SetMRMLSceneDataIO(scene, remote_io, data_io)

    logics = {}
    for name, cls in (("Colors", slicer.vtkSlicerColorLogic),
                      ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
                      ("Markups", slicer.vtkSlicerMarkupsLogic), ("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("Tables", slicer.vtkSlicerTablesLogic),
                      ("VolumeRendering", slicer.vtkSlicerVolumeRenderingLogic)):
        logic = cls()
        logic.SetMRMLApplicationLogic(app_logic)  # before the scene (the colour logic needs it)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    app_logic.SetColorLogic(logics["Colors"])
    _volume_rendering_presets(logics["VolumeRendering"], temp_dir)
    generic_id = logics["Colors"].GetDefaultLabelMapColorNodeID()
    if scene.GetNodeByID(generic_id) is None:
        generic = scene.AddNewNodeByClassWithID("vtkMRMLColorTableNode", "GenericColors", generic_id)
        generic.SetTypeToLabels()
        generic.SetSaveWithScene(False)

    layout = slicer.vtkMRMLLayoutLogic()  # creates the Red / Yellow / Green slice nodes and View1
    layout.SetMRMLScene(scene)
    layout.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    for slice_node in scene.GetNodesByClass("vtkMRMLSliceNode"):
        slice_logic = slicer.vtkMRMLSliceLogic()
        slice_logic.SetMRMLApplicationLogic(app_logic)
        slice_logic.SetMRMLScene(scene)
        slice_logic.SetSliceNode(slice_node)
        app_logic.GetSliceLogics().AddItem(slice_logic)

    io_manager = _CoreIOManager(scene)
    slicer.mrmlScene = scene
    slicer.app = types.SimpleNamespace(
        mrmlScene=lambda: scene, applicationLogic=lambda: app_logic, coreIOManager=lambda: io_manager,
        ioManager=lambda: io_manager, temporaryPath=temp_dir, pauseRender=lambda: None,
        resumeRender=lambda: None, processEvents=lambda *a: None, testingEnabled=lambda: True)
    slicer.modules = types.SimpleNamespace(**{n.lower(): _Module(n, lg) for n, lg in logics.items()})
    _STATE.clear()
    _STATE.update(scene=scene, app_logic=app_logic, keep=(remote_io, data_io, io_manager, layout, logics))
    return scene, app_logic


def release_scene(scene) -> None:
    """Free a headless scene made by ``bootstrap(fresh=True)`` once it has been saved: its nodes
    (and their voxels) are removed now rather than when the next scene is made; the next
    ``bootstrap()`` builds a new scene. Does nothing inside the Slicer application or for any
    other scene."""
    if in_slicer_application() or _STATE.get("scene") is not scene:
        return
    _STATE.clear()
    scene.Clear(True)


def _volume_rendering_presets(logic, temp_dir) -> None:
    """Stand-in presets (the wheel has no presets.xml): the names CreateDefaultVolumeRenderingNodes
    copies, with plain ramps; our own transfer functions replace them afterwards."""
    empty = os.path.join(temp_dir, "empty_presets.mrml")
    with open(empty, "w") as handle:
        handle.write('<MRML version="Slicer4.4.0"></MRML>\n')
    logic.LoadCustomPresetsScene(empty)
    presets = logic.GetPresetsScene()
    for name, (lo, hi) in (("US-Fetal", (0, 255)), ("MR-Default", (0, 1000)),
                           ("CT-Chest-Contrast-Enhanced", (-200, 600)), ("CT-AAA", (-200, 600))):
        if logic.GetPresetByName(name):
            continue
        preset = slicer.vtkMRMLVolumePropertyNode()
        preset.SetName(name)
        opacity, color = vtk.vtkPiecewiseFunction(), vtk.vtkColorTransferFunction()
        opacity.AddPoint(lo, 0.0)
        opacity.AddPoint(hi, 1.0)
        color.AddRGBPoint(lo, 0.0, 0.0, 0.0)
        color.AddRGBPoint(hi, 1.0, 1.0, 1.0)
        preset.GetVolumeProperty().SetScalarOpacity(opacity)
        preset.GetVolumeProperty().SetColor(color)
        presets.AddNode(preset)
