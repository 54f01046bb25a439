"""Expected user errors: one line on stderr and exit status 2 instead of a traceback.

Contract, for every command-line tool (``tools/*.py``, ``datasets/prepare_*.py``)::

    if __name__ == "__main__":
        sys.exit(run_tool(main))

* ``main(argv)`` raises on bad input; :func:`run_tool` turns an *expected* error into
  ``error: <message>`` on stderr (a single line: the message's lines are joined with "; ")
  and returns :data:`EXIT_USER_ERROR` (2, argparse's status for a bad command line).
* Expected errors are :class:`UserError` (the base of the data and checkpoint errors),
  ``FileNotFoundError``, ``FileExistsError`` (an output folder that is a file),
  ``NotADirectoryError``, ``IsADirectoryError``, ``PermissionError``,
  ``ValueError``, ``KeyError`` and an ``OSError`` for a full disk, a quota or a read-only
  file system. Their messages name the file or config key and say what to do.
* Anything else is a bug or an environment failure and keeps its full traceback. So does an
  expected error when the environment variable ``SARD_TRACEBACK=1`` is set, to see where it
  came from.
* Ctrl-C prints ``interrupted`` and returns 130, as shells do.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Optional, Sequence

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
TRACEBACK_ENV = "SARD_TRACEBACK"

# OSErrors that are the user's to fix (disk, quota, permissions), whatever their subclass.
USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class UserError(Exception):
    """A mistake in the user's input or setup; ``str(err)`` names the file or key and the fix."""


EXPECTED_ERRORS = (
    UserError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    ValueError,
    KeyError,
)


def is_user_error(err: BaseException) -> bool:
    """True for errors :func:`run_tool` reports in one line (see the module docstring)."""
    if isinstance(err, EXPECTED_ERRORS):
        return True
    return isinstance(err, OSError) and err.errno in USER_ERRNOS


def one_line(err: BaseException) -> str:
    """The error's message on one line (a KeyError's message without the quotes repr adds)."""
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]
    else:
        text = str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


def run_tool(main: Callable[[Optional[Sequence[str]]], object], argv=None) -> int:
    """Run ``main(argv)``; return its int status (None -> 0), or 2 after printing one line for
    an expected error, or 130 on Ctrl-C. Other exceptions propagate with their traceback."""
    try:
        status = main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - sorted below; the rest is re-raised
        if not is_user_error(err) or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return status if isinstance(status, int) and not isinstance(status, bool) else 0
