"""One line of `records verify`: a named check and its PASS, FAIL or SKIP with the reason."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<13} {self.detail}"
