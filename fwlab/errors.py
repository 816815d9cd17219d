"""The one exception type for mistakes a user can make (bad input, bad flag, missing file).

The CLI prints these as a single line without a traceback; anything else is a bug and keeps its
traceback.
"""


class FwlabError(Exception):
    """A problem the user can fix; the message names the file, line or value and says what to do."""
