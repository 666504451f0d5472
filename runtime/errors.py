"""Runtime errors for people (the runtime does not import the planner): problem + fix on one line."""
from __future__ import annotations


class ArtifactError(Exception):
    """An artifact directory that cannot be run: wrong model, corrupted or missing files, too little memory."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """`problem. Fix.`"""
        return f"{self.problem}. {self.fix[0].upper() + self.fix[1:]}."
