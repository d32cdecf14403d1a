"""Dataset problems and the one error that reports them all together."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file of one case: what, expected vs found."""

    case: str
    file: str
    what: str
    expected: str = ""
    found: str = ""

    def __str__(self) -> str:
        detail = f" (expected {self.expected}, found {self.found})" if self.expected or self.found else ""
        return f"case {self.case}: {self.file}: {self.what}{detail}"


class DatasetError(ValueError):
    """A dataset failed validation; ``problems`` lists every problem found, in case order."""

    def __init__(self, where: str, problems: list[Problem], note: str = ""):
        self.where = where
        self.problems = list(problems)
        lines = [f"{where}: {len(self.problems)} problem(s)" + (f"; {note}" if note else "")]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))
