"""One exception type for every user-facing mistake.

The CLI prints an ``ImagegenError`` as a single line (``error: ...``) and exits with status 2; anything
else is a bug and keeps its traceback. Messages name the problem *and* the fix.
"""


class ImagegenError(Exception):
    """A problem with the user's input (data, config, checkpoint, options), not a bug."""
