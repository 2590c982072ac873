"""The one error type of bad input, on the floor every module can import."""
from __future__ import annotations


class SpecError(ValueError):
    """A spec problem. ``str()`` lists every problem as ``path = value: what is allowed``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid spec:\n  " + "\n  ".join(problems) if len(problems) > 1
                         else problems[0])
