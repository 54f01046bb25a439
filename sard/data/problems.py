"""Collecting data problems: fatal ones become one clear error, safe ones counted warnings.

Loaders record every problem they meet in a :class:`ProblemLog` instead of raising at the first
one, so a user sees *all* missing files or duplicate ids at once, and a skipped annotation is
reported as "17 annotations with an empty mask skipped (e.g. ...)" rather than 17 log lines.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List

from sard.user_errors import UserError

logger = logging.getLogger("sard.data")

# How many examples of one kind of problem are quoted in a message.
MAX_EXAMPLES = 3
# How many fatal problems are quoted in the raised error.
MAX_FATAL_LISTED = 10


class DatasetError(UserError, ValueError):
    """A dataset cannot be used as given; the message names the file(s) and the reason(s)."""


@dataclass
class ProblemLog:
    """Fatal problems and counted, non-fatal ones (kind -> count, a few examples each)."""

    source: str
    fatal: List[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    examples: Dict[str, List[str]] = field(default_factory=dict)

    def error(self, message: str) -> None:
        """Record a problem that makes the dataset unusable."""
        self.fatal.append(message)

    def warn(self, kind: str, example: str = "") -> None:
        """Record one occurrence of a problem that was fixed or safely skipped."""
        self.counts[kind] += 1
        if example:
            shown = self.examples.setdefault(kind, [])
            if len(shown) < MAX_EXAMPLES:
                shown.append(example)

    def warning_lines(self) -> List[str]:
        """One line per kind: '<count> <kind> (e.g. <examples>)'."""
        lines = []
        for kind, count in sorted(self.counts.items()):
            shown = self.examples.get(kind)
            suffix = f" (e.g. {'; '.join(shown)})" if shown else ""
            lines.append(f"{count} {kind}{suffix}")
        return lines

    def emit_warnings(self) -> None:
        """Log each counted problem kind once on the ``sard.data`` logger."""
        for line in self.warning_lines():
            logger.warning("%s: %s", self.source, line)

    def raise_if_fatal(self) -> None:
        """Raise DatasetError listing the fatal problems, if any."""
        if not self.fatal:
            return
        listed = self.fatal[:MAX_FATAL_LISTED]
        more = len(self.fatal) - len(listed)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise DatasetError(
            f"{self.source}: {len(self.fatal)} fatal problem(s):\n  " + "\n  ".join(listed) + tail
        )
