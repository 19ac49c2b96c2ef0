"""The one base class of every error a user can cause and fix (bad input, config, outputs).

The CLI reports a ``ForestNetError`` as one line and exits with code 2; anything else is a
bug and keeps its traceback. Subclasses also derive from the builtin type that fits
(``ValueError`` for bad values), so callers that catch those keep working.
"""

from __future__ import annotations


class ForestNetError(Exception):
    """A user-facing error: its message names the file or setting and the reason."""
