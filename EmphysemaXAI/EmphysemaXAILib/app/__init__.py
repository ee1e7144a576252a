"""Applications of the core (front-end layer: they may use the MRML layer): a case's output
folder (``case_files``), cohorts (``find_cases``, ``batch``), the HTML report (``report``,
``report_figures``) and plain-text summaries shared by the command line and the Slicer module
(``text``). Import from the modules (the package imports nothing itself).
"""

__all__ = ["batch", "case_files", "find_cases", "report", "report_figures", "text"]
