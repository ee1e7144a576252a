"""The case's masks as a DICOM Segmentation (highdicom, BINARY): ``segment_specs`` and ``build_segmentation``.

Segments, in this order (numbers from 1; absent ones are skipped, later ones move up):

==================  ==========================================  =======================================
label               category                                     type (+ modifier)
==================  ==========================================  =======================================
Lungs               SCT 91723000 Anatomical Structure            SCT 39607008 Lung
Right lung          SCT 91723000 Anatomical Structure            SCT 39607008 Lung + SCT 24028007 Right
Left lung           SCT 91723000 Anatomical Structure            SCT 39607008 Lung + SCT 7771000 Left
Airways             SCT 91723000 Anatomical Structure            SCT 89187006 Airway structure
RUL ... LLL (lobes) SCT 91723000 Anatomical Structure            SCT 45653009 Upper / 72481006 Middle
                                                                 (right) / 90572001 Lower lobe of lung
                                                                 + SCT Right / Left
Normal parenchyma   SCT 85756007 Tissue                          SCT 17621005 Normal (region: Lung)
Centrilobular ...   SCT 49755003 Morphologically Abnormal        SCT 68328006 Centriacinar emphysema
                    Structure                                    + SCT 255604002 Mild / 6736007 Moderate
                                                                 / 24484000 Severe
Paraseptal ...      SCT 49755003                                 SCT 31898008 Paraseptal emphysema
Panlobular ...      SCT 49755003                                 SCT 4981000 Panacinar emphysema
==================  ==========================================  =======================================

Why these codes: the lung and airway codes are those of the Slicer segmentation
(:mod:`~EmphysemaXAILib.mrml.nodes`: Lung + laterality modifier, Airway structure), with the
category code DICOM's CID 7150 lists (91723000; Slicer's terminology file still carries the older
123037004 for the same "Anatomical Structure"). SNOMED CT has no morphologic-abnormality concepts for
the emphysema subtypes, only disorders: centriacinar (= centrilobular) 68328006, paraseptal 31898008
and panacinar (= panlobular) 4981000 emphysema are the children of 87433001 Pulmonary emphysema
(which the SR uses as the finding type); placed under the category Morphologically Abnormal
Structure (CID 7150) as DICOM SEG practice does for lesions. The model's centrilobular grades keep
one type code and differ by a severity modifier (SCT Mild / Moderate / Severe, CID 3716). Normal
lung is Tissue / Normal (both in CIDs 7150 / 7151) with the anatomic region Lung.

The whole lung has its own segment ("Lungs", overlapping Right + Left: a BINARY SEG allows it)
so that the SR's whole-lung measurements reference one segment. Thirds are not segments (the CIP
thirds cut through slices; the SR names them by finding site). Memory: the segments are stacked
as one bool (slices, rows, columns, segments) array, as highdicom takes them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.patterns import PATTERN_COLORS, PATTERNS
from ..analysis.regions import LOBE_CODES

SCT = "SCT"
ANATOMY = ("91723000", SCT, "Anatomical Structure")
ABNORMAL = ("49755003", SCT, "Morphologically Abnormal Structure")
TISSUE = ("85756007", SCT, "Tissue")
LUNG = ("39607008", SCT, "Lung")
RIGHT, LEFT = ("24028007", SCT, "Right"), ("7771000", SCT, "Left")
AIRWAYS = ("89187006", SCT, "Airway structure")
PULMONARY_EMPHYSEMA = ("87433001", SCT, "Pulmonary emphysema")
SEVERITY_CODES = {"none": ("260413007", SCT, "None"), "mild": ("255604002", SCT, "Mild"),
                  "moderate": ("6736007", SCT, "Moderate"), "severe": ("24484000", SCT, "Severe")}
#: lobe name -> (label, type code, laterality)
LOBES = {"rul": ("Right upper lobe", ("45653009", SCT, "Upper lobe of lung"), RIGHT),
         "rml": ("Right middle lobe", ("72481006", SCT, "Middle lobe of right lung"), None),
         "rll": ("Right lower lobe", ("90572001", SCT, "Lower lobe of lung"), RIGHT),
         "lul": ("Left upper lobe", ("45653009", SCT, "Upper lobe of lung"), LEFT),
         "lll": ("Left lower lobe", ("90572001", SCT, "Lower lobe of lung"), LEFT)}
CENTRILOBULAR = ("68328006", SCT, "Centriacinar emphysema")
#: pattern name (analysis.patterns.PATTERNS) -> (label, category, type, modifier)
PATTERN_SEGMENTS = {
    "normal": ("Normal parenchyma", TISSUE, ("17621005", SCT, "Normal"), None),
    "centrilobular_mild": ("Centrilobular emphysema, mild", ABNORMAL, CENTRILOBULAR, SEVERITY_CODES["mild"]),
    "centrilobular_moderate": ("Centrilobular emphysema, moderate", ABNORMAL, CENTRILOBULAR,
                               SEVERITY_CODES["moderate"]),
    "centrilobular_severe": ("Centrilobular emphysema, severe", ABNORMAL, CENTRILOBULAR, SEVERITY_CODES["severe"]),
    "paraseptal": ("Paraseptal emphysema", ABNORMAL, ("31898008", SCT, "Paraseptal emphysema"), None),
    "panlobular": ("Panlobular emphysema", ABNORMAL, ("4981000", SCT, "Panacinar emphysema"), None),
}
assert tuple(PATTERN_SEGMENTS) == PATTERNS
#: segment colours (RGB 0-1): lungs as the Slicer scene shows them, patterns as their colour table
COLORS = {"Lungs": (0.7, 0.8, 0.9), "Right lung": (0.50, 0.68, 0.95), "Left lung": (0.95, 0.70, 0.40),
          "Airways": (0.56, 0.93, 0.56)}


@dataclass
class SegmentSpec:
    """One segment: its name in the results (``key``: a region name such as ``whole``, ``right``,
    ``rul``, or ``airways`` / ``pattern:<name>``), label, codes, colour and bool (z, y, x) mask."""

    key: str
    label: str
    category: tuple
    type: tuple
    modifier: tuple | None
    color: tuple
    mask: np.ndarray
    algorithm: str  # "segmentation" (the lung engine) or "model" (the pattern model)


def segment_specs(labels: np.ndarray, airways=None, lobes=None, patterns=None) -> list[SegmentSpec]:
    """The segments of a case from arrays on one grid: ``labels`` (1 right, 2 left), optional bool
    ``airways``, ``lobes`` (LTRCLobes codes) and ``patterns`` (pattern map, codes 1-6); empty
    masks are left out."""
    lungs = "segmentation"
    specs = [SegmentSpec("whole", "Lungs", ANATOMY, LUNG, None, COLORS["Lungs"], labels > 0, lungs),
             SegmentSpec("right", "Right lung", ANATOMY, LUNG, RIGHT, COLORS["Right lung"], labels == 1, lungs),
             SegmentSpec("left", "Left lung", ANATOMY, LUNG, LEFT, COLORS["Left lung"], labels == 2, lungs)]
    if airways is not None:
        specs.append(SegmentSpec("airways", "Airways", ANATOMY, AIRWAYS, None, COLORS["Airways"],
                                 np.asarray(airways, bool), "segmentation"))
    if lobes is not None:
        for name, (label, code, side) in LOBES.items():
            specs.append(SegmentSpec(name, label, ANATOMY, code, side, (0.8, 0.8, 0.6), lobes == LOBE_CODES[name],
                                     "segmentation"))
    if patterns is not None:
        for (value, _, rgba), (name, (label, category, code, modifier)) in zip(PATTERN_COLORS[1:],
                                                                                 PATTERN_SEGMENTS.items()):
            specs.append(SegmentSpec(f"pattern:{name}", label, category, code, modifier, rgba[:3], patterns == value,
                                     "model"))
    return [s for s in specs if s.mask.any()]


def coded(code: tuple):
    """A highdicom CodedConcept from (value, scheme, meaning)."""
    from .pydicom_compat import import_highdicom

    hd = import_highdicom()

    return hd.sr.CodedConcept(*code)


def cielab(rgb) -> list[int]:
    """DICOM RecommendedDisplayCIELabValue (L, a, b scaled to 0-65535) of an sRGB colour (0-1),
    D65 white, computed here (highdicom 0.22 has no colour helper)."""
    rgb = np.asarray(rgb, float)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])
    scaled = [lab[0] * 65535 / 100, (lab[1] + 128) * 65535 / 255, (lab[2] + 128) * 65535 / 255]
    return [int(round(min(max(v, 0), 65535))) for v in scaled]


def algorithm_identification(name: str, version: str, ai: bool):
    """highdicom AlgorithmIdentificationSequence (family: artificial intelligence or morphological
    operations, CID 7162)."""
    from .pydicom_compat import import_highdicom

    hd = import_highdicom()

    family = ("123110", "DCM", "Artificial Intelligence") if ai else ("123104", "DCM", "Morphological Operations")
    return hd.AlgorithmIdentificationSequence(name=name[:64], family=coded(family), version=version[:64])


def build_segmentation(source_images: list, specs: list[SegmentSpec], *, series_uid: str, sop_uid: str,
                       engine: str, model: dict | None, software_version: str):
    """A highdicom BINARY Segmentation of ``specs`` (masks (z, y, x) on the grid of
    ``source_images``, one header per slice in z order) referencing those images.

    ``engine``: the lung engine (``lungmask``, ``classical`` or ``file`` = a user's mask: MANUAL);
    ``model``: summary.json's ``severity.model`` (``name``, ``sha256``) for pattern segments.
    """
    from .pydicom_compat import import_highdicom

    hd = import_highdicom()
    from pydicom.uid import generate_uid

    engine_id = None if engine == "file" else algorithm_identification(
        f"EmphysemaXAI {engine} lung segmentation", software_version, ai=engine == "lungmask")
    model_id = None if model is None else algorithm_identification(
        str(model.get("name") or "EmphysemaXAI model"), str(model.get("sha256") or "unknown"), ai=True)
    descriptions = []
    for number, spec in enumerate(specs, start=1):
        algorithm = model_id if spec.algorithm == "model" else engine_id
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=spec.label, segmented_property_category=coded(spec.category),
            segmented_property_type=coded(spec.type),
            algorithm_type="MANUAL" if algorithm is None else "AUTOMATIC", algorithm_identification=algorithm,
            tracking_uid=generate_uid(entropy_srcs=[sop_uid, spec.key]), tracking_id=spec.key,
            anatomic_regions=[coded(LUNG)] if spec.algorithm == "model" else None)
        if spec.modifier is not None:
            from pydicom.dataset import Dataset

            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = spec.modifier
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [item]
        description.RecommendedDisplayCIELabValue = cielab(spec.color)
        descriptions.append(description)
    pixels = np.zeros(specs[0].mask.shape + (len(specs),), dtype=bool)
    for index, spec in enumerate(specs):
        pixels[..., index] = spec.mask
    return hd.seg.Segmentation(
        source_images=source_images, pixel_array=pixels, segmentation_type="BINARY",
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=901,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer="EmphysemaXAI",
        manufacturer_model_name="EmphysemaXAI", software_versions=software_version, device_serial_number="0",
        content_description="Lungs, airways, emphysema patterns (research use only)",
        content_creator_name="EmphysemaXAI^", content_label="EMPHYSEMAXAI",
        series_description="EmphysemaXAI segmentation")
