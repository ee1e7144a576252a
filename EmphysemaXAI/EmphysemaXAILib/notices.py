"""User-facing notices shared by every front end (command line, report, Slicer panel, summary.json)."""

#: The disclaimer every output and panel carries.
NOT_CLINICAL = "Research and teaching use only: not a medical device, not for clinical decisions."
