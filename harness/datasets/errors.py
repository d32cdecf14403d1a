"""Dataset problems and the one error that reports them all together.

A ``DatasetError`` is a :class:`harness.errors.UserError`: the input data is wrong, not the
harness, so ``mednext-bench`` prints it without a traceback and exits with status 2.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UserError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file of one case: what, expected vs found.

    ``case`` is ``"-"`` for a problem of the dataset as a whole (a missing folder, dataset.json).
    """

    case: str
    file: str
    what: str
    expected: str = ""
    found: str = ""

    def __str__(self) -> str:
        detail = f" (expected {self.expected}, found {self.found})" if self.expected or self.found else ""
        where = f"case {self.case}: " if self.case != "-" else ""
        return f"{where}{self.file}: {self.what}{detail}"


class DatasetError(UserError):
    """A dataset failed validation; ``problems`` lists every problem found, in case order.

    With one problem the message is one line,
    ``<where>: case <id>: <file>: <what> (expected X, found Y); <note>``; with several, a first
    line ``<where>: N problems; <note>`` and one indented ``  - ...`` line per problem.
    """

    def __init__(self, where: str, problems: list[Problem], note: str = ""):
        self.where = where
        self.problems = list(problems)
        self.note = note
        tail = f"; {note}" if note else ""
        if len(self.problems) == 1:
            only = self.problems[0]
            # a problem of the folder itself names it once, not twice
            text = str(only) if only.case == "-" and only.file == where else f"{where}: {only}"
            message = text + tail
        else:
            lines = [f"{where}: {len(self.problems)} problems{tail}"]
            lines += [f"  - {p}" for p in self.problems]
            message = "\n".join(lines)
        super().__init__(message)
