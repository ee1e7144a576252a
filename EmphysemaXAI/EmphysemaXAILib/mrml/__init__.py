"""MRML logic layer: core results <-> MRML nodes. Imports ``slicer`` and ``vtk``, never Qt.

Runs unchanged inside the Slicer application and headless on the ``slicer-core`` wheel.
"""

__all__ = ["app", "module_logic", "nodes", "render", "scene_export", "volumes"]
