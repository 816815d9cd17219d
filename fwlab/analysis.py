"""The former name of fwlab.report and fwlab.runs, kept so that code written against it still runs:
`analysis.load_runs` is fwlab.runs.load_runs, everything else is fwlab.report's. New code imports
those two modules."""
from fwlab.report import *  # noqa: F401,F403
from fwlab.report import NOTEBOOK, REPORT_FILES, SUMMARY_COLUMNS  # noqa: F401
from fwlab.runs import Lab, load_runs  # noqa: F401
