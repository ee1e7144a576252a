"""The CT volume every step works on: HU voxels plus geometry and acquisition facts.

Conventions (``docs/contracts.md``): the array is (z, y, x); ``spacing`` and ``origin`` are (x, y, z)
in millimetres in LPS as ITK reports them; ``direction`` is ITK's 3 x 3 direction matrix,
row-major, LPS (its columns are the LPS directions of the x, y and z index axes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

#: HU written where the reader creates voxels outside the reconstructed field of view
#: (for example after a gantry-tilt correction). Quality control ignores values below -1024.
OUTSIDE_FOV_HU = -3024

#: Connectivity within one axial slice of a (z, y, x) array and none across slices (for
#: ``scipy.ndimage`` labelling / dilation slice by slice in one call): 4-neighbours in-plane.
IN_PLANE = np.array([np.zeros((3, 3), int), [[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.zeros((3, 3), int)])

#: Keys of :attr:`CTVolume.acquisition`, in the order ``info`` prints them.
ACQUISITION_KEYS = (
    "kernel", "kvp", "exposure_mas", "ctdivol", "slice_thickness_mm",
    "manufacturer", "series_uid", "study_date",
)


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder (``files`` stays inside the reader, never in outputs)."""

    uid: str
    description: str
    modality: str | None
    slices: int
    kernel: str | None
    files: list = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {"uid": self.uid, "description": self.description, "modality": self.modality,
                "slices": self.slices, "kernel": self.kernel}


@dataclass
class CTVolume:
    """A CT volume in Hounsfield units on a regular grid.

    Attributes:
        hu: (z, y, x) array of HU; int16 when the data are integral and fit, else float32.
        spacing: voxel size (x, y, z) in mm.
        origin: LPS position (x, y, z) in mm of the centre of voxel (0, 0, 0).
        direction: 9 numbers, ITK's direction matrix row-major, LPS.
        kind: where it came from: ``dicom``, ``nrrd``, ``nifti``, ``mha``, ``image2d`` or ``array``.
        modality: the DICOM Modality tag (None when the source has none).
        acquisition: facts named by :data:`ACQUISITION_KEYS` (None when unknown).
        series: every series found beside the chosen one (DICOM folders only).
        padding_hu: HU of the PixelPaddingValue, when the series declares one.
        read_warnings: what the reader skipped or corrected (corrupt files, resampling ...).
        geometry: how the slice geometry was found (``uniform``, ``resampled_z``,
            ``tilt_corrected``, ``single_slice``) and the raw slice spacings measured.
        identity: patient name / ID / birth date, filled only when the caller asks.
        orientation: the :class:`~.orientation.Reorientation` from the grid the volume was
            read on to this (canonical axial) grid; None for a volume never reoriented.
            Writers map arrays back with it (:meth:`on_input_grid`).
    """

    hu: np.ndarray
    spacing: tuple
    origin: tuple
    direction: tuple
    kind: str = "array"
    modality: str | None = None
    acquisition: dict = field(default_factory=lambda: dict.fromkeys(ACQUISITION_KEYS))
    series: list = field(default_factory=list)
    padding_hu: float | None = None
    read_warnings: list = field(default_factory=list)
    geometry: dict = field(default_factory=dict)
    identity: dict | None = None
    orientation: object = None

    @property
    def shape(self) -> tuple:
        """(z, y, x) voxel counts."""
        return tuple(int(n) for n in self.hu.shape)

    @property
    def direction_matrix(self) -> np.ndarray:
        """3 x 3 LPS direction matrix (columns = index axes x, y, z)."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_lps(self, zyx) -> np.ndarray:
        """LPS point (x, y, z) in mm of the voxel index given as (z, y, x) (may be fractional)."""
        ijk = np.asarray(zyx, dtype=float)[::-1]
        return np.asarray(self.origin) + self.direction_matrix @ (np.asarray(self.spacing) * ijk)

    def to_sitk(self) -> sitk.Image:
        """The volume as a SimpleITK image (shares no memory with :attr:`hu`)."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.hu)
        image.SetSpacing([float(s) for s in self.spacing])
        image.SetOrigin([float(o) for o in self.origin])
        image.SetDirection([float(d) for d in self.direction])
        return image

    def input_geometry_dict(self) -> dict:
        """Like :meth:`geometry_dict`, for the grid the volume was read on (the user's file)."""
        if self.orientation is None:
            return self.geometry_dict()
        return self.orientation.input_geometry()

    def on_input_grid(self, array: np.ndarray, labels: bool | None = None) -> np.ndarray:
        """A (z, y, x) array on this volume's grid mapped back onto the grid it was read on."""
        return array if self.orientation is None else self.orientation.to_input(array, labels)

    def from_input_grid(self, array: np.ndarray, labels: bool = True) -> np.ndarray:
        """A (z, y, x) array on the grid the volume was read on (a user's mask) moved onto this
        volume's grid, as the volume itself was moved (nearest neighbour for labels)."""
        return array if self.orientation is None else self.orientation.to_canonical(array, labels)

    def as_input(self) -> "CTVolume":
        """This volume on the grid it was read on (itself when never reoriented)."""
        if self.orientation is None or self.orientation.identity:
            return self
        from dataclasses import replace

        geometry = self.orientation.input_geometry()
        return replace(self, hu=self.on_input_grid(self.hu, labels=False), spacing=tuple(geometry["spacing"]),
                       origin=tuple(geometry["origin"]), direction=tuple(geometry["direction"]), orientation=None)

    def geometry_dict(self) -> dict:
        """``shape``, ``spacing``, ``origin``, ``direction`` as plain lists (JSON-ready)."""
        return {"shape": list(self.shape), "spacing": [float(s) for s in self.spacing],
                "origin": [float(o) for o in self.origin],
                "direction": [float(d) for d in self.direction]}
