"""The one error type for a mistake of the user, as opposed to a fault of the harness.

``UserError`` is raised where the input is wrong: an unknown model, study, profile or dataset
name, a missing or malformed input file, a combination of options that cannot work. Its message
says what was wrong and what to do about it. ``mednext-bench`` prints such an error as one line
(``mednext-bench: error: ...``) and exits with status 2, like a bad command-line argument; any
other exception is a fault of the harness and is reported with its traceback kept in a log file.

It subclasses ``ValueError`` so that callers which already catch ``ValueError`` keep working.
"""
from __future__ import annotations


class UserError(ValueError):
    """A mistake of the user: unknown name, missing or bad input, bad combination of options.

    The message names the bad value and says what to do, e.g.
    ``UserError("unknown model 'mednext-x'; known: mednext-s-k3, ...")``.
    """
