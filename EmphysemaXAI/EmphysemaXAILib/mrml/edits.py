"""Whether the user edited the module's lung segmentation since a run wrote it.

Apply on a CT refills that CT's result segmentation ("Lungs") with the new run's labels, so edits
made in the Segment Editor would be lost without a word (issue 26). When a run writes the
segmentation, :func:`record_written` stores a fingerprint of its voxels on the node
(:data:`DIGEST_ATTRIBUTE`, saved with the scene); :func:`edited_since_written` compares it with
the node's voxels now (:func:`~.module_logic.edited_result_segmentation` finds a CT's node), so
the module can offer to recompute from the edited lungs (or to replace them) before anything is
overwritten.

The fingerprint (:func:`segmentation_digest`) covers every segment's name, label value, the
absolute IJK bounding box of its voxels (the segmentation's own geometry, extent offset included)
and its binary labelmap inside that box: an edit of any voxel of any segment changes it; padding or cropping the
labelmap's extent, which Slicer does when it saves and reloads a segmentation, does not.
MRML only (no Qt): tested headless with slicer-core.
"""
from __future__ import annotations

import hashlib

import numpy as np
import slicer

DIGEST_ATTRIBUTE = "EmphysemaXAI.writtenDigest"


def segmentation_digest(segmentation_node) -> str:
    """SHA-1 hex digest of ``segmentation_node``'s segments (module docstring)."""
    from vtk.util.numpy_support import vtk_to_numpy

    segmentation = segmentation_node.GetSegmentation()
    representation = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    digest = hashlib.sha1()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        digest.update(f"{segment.GetName()}|{segment.GetLabelValue()}|".encode())
        image = segment.GetRepresentation(representation)
        scalars = image.GetPointData().GetScalars() if image is not None else None
        if scalars is None:
            continue
        x0, x1, y0, y1, z0, z1 = image.GetExtent()
        mask = vtk_to_numpy(scalars).reshape(z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1) == segment.GetLabelValue()
        # the segment's tight bounding box (absolute IJK) and its voxels inside it: independent of
        # how far the labelmap's extent reaches beyond the segment
        axes = [np.flatnonzero(mask.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1))]
        if any(len(a) == 0 for a in axes):
            continue
        (zs, ys, xs) = axes
        box = mask[zs[0]:zs[-1] + 1, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
        digest.update(np.array([zs[0] + z0, ys[0] + y0, xs[0] + x0, *box.shape], np.int64).tobytes())
        digest.update(np.packbits(box).tobytes())
    return digest.hexdigest()


def record_written(segmentation_node) -> None:
    """Remember ``segmentation_node``'s voxels as a run wrote them."""
    segmentation_node.SetAttribute(DIGEST_ATTRIBUTE, segmentation_digest(segmentation_node))


def edited_since_written(segmentation_node) -> bool:
    """True when a run wrote ``segmentation_node`` (:func:`record_written`) and its voxels differ
    from what it wrote; False for a segmentation no run wrote, or one as written."""
    written = segmentation_node.GetAttribute(DIGEST_ATTRIBUTE)
    return written is not None and segmentation_digest(segmentation_node) != written
