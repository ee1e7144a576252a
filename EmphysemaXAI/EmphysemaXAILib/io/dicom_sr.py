"""summary.json's measurements as a DICOM Structured Report: highdicom Comprehensive 3D SR holding a
TID 1500 Measurement Report (``build_report``).

One measurement group per region and source of figures, its tracking identifier saying which
(``qct whole``, ``model right_upper`` ...):

- ``qct <region>``: every region of ``summary["qct"]["regions"]``; measurements (values exactly
  summary.json's, None left out): %LAA-950 raw and calibrated, Perc15 raw and calibrated (HU),
  mean density raw and calibrated (HU), volume (l), mass (g); the whole lung's group also holds
  the QCT severity class as a qualitative evaluation (SCT 246112005 Severity = SCT None / Mild /
  Moderate / Severe, CID 3716). Algorithm: ``EmphysemaXAI QCT`` with the package version.
- ``model <region>`` (when a model ran): the model's emphysema extent of the region (%) and, for a
  pattern model, the share of the region's lung in each pattern (%); the whole lung's group holds
  the model's severity class. Algorithm: the model's name, version = the weights' SHA-256.

Regions with a segment in the SEG (whole = "Lungs", right, left, lobes) are volumetric ROI groups
(TID 1411) whose ReferencedSegment is that segment; the thirds, which cut through slices and are
no segment, are TID 1501 groups with their finding site (SCT upper / middle / lower zone of lung +
laterality). Finding type of every group: SCT 87433001 Pulmonary emphysema.

Units are UCUM: ``%``, ``[hnsf'U]``, ``l``, ``g``. Concepts with no standard code (%LAA-950, Perc15,
the calibrated variants, pattern shares, the model's extent) use the local coding scheme
:data:`LOCAL` ("99EXAI"; "99" marks a private scheme, as DICOM PS3.16 allows). Volume is SCT
118565006, mass SCT 118538004, mean density DCM 112181 Mean Attenuation Coefficient.
"""
from __future__ import annotations

from ..analysis.patterns import PATTERNS
from .dicom_seg import LEFT, LOBES, LUNG, PULMONARY_EMPHYSEMA, RIGHT, SEVERITY_CODES, coded

LOCAL = "99EXAI"
UNITS = {"%": ("%", "UCUM", "Percent"), "HU": ("[hnsf'U]", "UCUM", "Hounsfield unit"),
         "l": ("l", "UCUM", "liter"), "g": ("g", "UCUM", "gram")}
#: summary.json key -> (concept code, unit)
QCT_MEASURES = {
    "laa950_pct": (("EXAI001", LOCAL, "Lung volume below -950 HU (%LAA-950)"), "%"),
    "laa950_pct_calibrated": (("EXAI002", LOCAL, "Lung volume below -950 HU, calibrated (%LAA-950)"), "%"),
    "perc15_hu": (("EXAI003", LOCAL, "15th percentile of lung density (Perc15)"), "HU"),
    "perc15_hu_calibrated": (("EXAI004", LOCAL, "15th percentile of lung density, calibrated"), "HU"),
    "mean_hu": (("112181", "DCM", "Mean Attenuation Coefficient"), "HU"),
    "mean_hu_calibrated": (("EXAI005", LOCAL, "Mean lung density, calibrated"), "HU"),
    "volume_l": (("118565006", "SCT", "Volume"), "l"),
    "mass_g": (("118538004", "SCT", "Mass"), "g"),
}
MODEL_EXTENT = ("EXAI010", LOCAL, "Emphysema extent estimated by the model")
SEVERITY = ("246112005", "SCT", "Severity")
ZONES = {"upper": ("281392002", "SCT", "Upper zone of lung"), "middle": ("281393007", "SCT", "Middle zone of lung"),
         "lower": ("281394001", "SCT", "Lower zone of lung")}


def pattern_code(name: str) -> tuple:
    """Local concept of the share of lung in pattern ``name`` (analysis.patterns.PATTERNS)."""
    return (f"EXAI1{PATTERNS.index(name) + 1:02d}", LOCAL, f"Share of lung in pattern {name.replace('_', ' ')}")


def finding_site(region: str):
    """highdicom FindingSite of a region name: Lung, a zone of lung (thirds) or a lobe, with the
    laterality of ``right*`` / ``left*`` regions and of the lobes."""
    from .pydicom_compat import import_highdicom

    hd = import_highdicom()

    laterality = None
    if region.startswith("right") or region in ("rul", "rml", "rll"):
        laterality = RIGHT
    elif region.startswith("left") or region in ("lul", "lll"):
        laterality = LEFT
    location = ZONES.get(region.rpartition("_")[2]) or (LOBES[region][1] if region in LOBES else LUNG)
    if region == "rml":
        laterality = None  # the middle lobe's code says right already
    return hd.sr.FindingSite(anatomic_location=coded(location),
                             laterality=coded(laterality) if laterality else None)


def measurements(values: dict, table: dict, algorithm) -> list:
    """highdicom Measurements of the keys of ``table`` that ``values`` holds (not None). The value
    is stored as NumericValue (DS, at most 16 characters) and, exactly, as FloatingPointValue (FD;
    set here when the highdicom version does not: 0.22 writes DS only)."""
    from .pydicom_compat import import_highdicom

    hd = import_highdicom()

    out = []
    for key, (concept, unit) in table.items():
        if values.get(key) is not None:
            value = float(values[key])
            measurement = hd.sr.Measurement(name=coded(concept), value=value, unit=coded(UNITS[unit]),
                                            algorithm_id=algorithm)
            measured = measurement[0].MeasuredValueSequence[0]  # the template's NUM item
            if "FloatingPointValue" not in measured:
                measured.FloatingPointValue = value
            out.append(measurement)
    return out


def severity_evaluation(name: str | None) -> list:
    """[QualitativeEvaluation Severity = the class] or [] without a class."""
    from .pydicom_compat import import_highdicom

    hd = import_highdicom()

    if name not in SEVERITY_CODES:
        return []
    return [hd.sr.QualitativeEvaluation(name=coded(SEVERITY), value=coded(SEVERITY_CODES[name]))]


def group(label: str, region: str, uid: str, items: list, evaluations: list, algorithm, segment_ref):
    """A measurement group: volumetric (TID 1411) with ``segment_ref``, else TID 1501."""
    from .pydicom_compat import import_highdicom

    hd = import_highdicom()

    tracking = hd.sr.TrackingIdentifier(uid=uid, identifier=f"{label} {region}")
    common = dict(tracking_identifier=tracking, finding_type=coded(PULMONARY_EMPHYSEMA), algorithm_id=algorithm,
                  finding_sites=[finding_site(region)], measurements=items or None,
                  qualitative_evaluations=evaluations or None)
    if segment_ref is not None:
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=segment_ref, **common)
    return hd.sr.MeasurementsAndQualitativeEvaluations(**common)


def build_report(seg, evidence: list, summary: dict, segment_numbers: dict, *, series_uid: str, sop_uid: str,
                 ct_series_uid: str, software_version: str):
    """The Comprehensive 3D SR of ``summary`` (summary.json's dict). ``seg``: the highdicom
    Segmentation written beside it; ``evidence``: the CT headers it references (with ``seg``);
    ``segment_numbers``: region name -> segment number in ``seg``."""
    from .pydicom_compat import import_highdicom

    hd = import_highdicom()
    from pydicom.uid import generate_uid

    def segment_ref(region):
        number = segment_numbers.get(region)
        if number is None:
            return None
        return hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                       segment_number=number,
                                       source_series=hd.sr.SourceSeriesForSegmentation(ct_series_uid))

    qct_algorithm = hd.sr.AlgorithmIdentification(name="EmphysemaXAI QCT", version=software_version)
    groups = []
    for row in summary["qct"]["regions"]:
        region = row["region"]
        evaluations = severity_evaluation((summary.get("qct_severity") or {}).get("class")) if region == "whole" else []
        groups.append(group("qct", region, generate_uid(entropy_srcs=[sop_uid, "qct", region]),
                            measurements(row, QCT_MEASURES, qct_algorithm), evaluations, qct_algorithm,
                            segment_ref(region)))
    model = summary.get("severity")
    if model is not None:
        info = model.get("model") or {}
        algorithm = hd.sr.AlgorithmIdentification(name=str(info.get("name") or "EmphysemaXAI model")[:64],
                                                  version=str(info.get("sha256") or "unknown")[:64])
        shares = (model.get("patterns") or {}).get("share_by_region") or {}
        extents = dict(model.get("extent_by_region") or {})
        extents.setdefault("whole", model.get("extent_pct"))
        for region in [r["region"] for r in summary["qct"]["regions"]]:
            values = {"extent": extents.get(region), **{p: (shares.get(region) or {}).get(p) for p in PATTERNS}}
            table = {"extent": (MODEL_EXTENT, "%"), **{p: (pattern_code(p), "%") for p in PATTERNS}}
            items = measurements(values, table, algorithm)
            evaluations = severity_evaluation(model.get("class")) if region == "whole" else []
            if items or evaluations:
                groups.append(group("model", region, generate_uid(entropy_srcs=[sop_uid, "model", region]),
                                    items, evaluations, algorithm, segment_ref(region)))
    device = hd.sr.DeviceObserverIdentifyingAttributes(uid=generate_uid(entropy_srcs=["EmphysemaXAI device"]),
                                                       name="EmphysemaXAI", manufacturer_name="EmphysemaXAI",
                                                       model_name="EmphysemaXAI")
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=coded(("121007", "DCM", "Device")), observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(observation_context=context,
                                     procedure_reported=coded(("25045-6", "LN", "CT unspecified body region")),
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *evidence], content=report, series_instance_uid=series_uid, series_number=902,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer="EmphysemaXAI", is_complete=True,
        series_description="EmphysemaXAI measurements")
    sr.CodingSchemeIdentificationSequence = [local_scheme()]
    return sr


def local_scheme():
    """CodingSchemeIdentificationSequence item naming the local scheme :data:`LOCAL`."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = LOCAL
    item.CodingSchemeName = "EmphysemaXAI local concepts"
    item.CodingSchemeResponsibleOrganization = "EmphysemaXAI project"
    return item
