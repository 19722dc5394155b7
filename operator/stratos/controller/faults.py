"""Crash points for tests: the operator exits at a named point, as if it had been killed there.

``STRATOS_CRASH_AT=<point>:<detail>`` (e.g. ``before-announce:TeacherSelected``) makes the operator
process exit at once, without cleanup, the first time it reaches that point with that detail. Tests
use it to stop the operator between two writes deterministically instead of racing a timer. Unset (as
in every deployment), a crash point does nothing.
"""

from __future__ import annotations

import logging
import os
import sys

CRASH_ENV = "STRATOS_CRASH_AT"
CRASH_EXIT_CODE = 86
_TARGET = os.environ.get(CRASH_ENV, "")


def crash_point(point: str, detail: str) -> None:
    """Exit the process now if ``STRATOS_CRASH_AT`` names this point and detail."""
    if _TARGET and f"{point}:{detail}" == _TARGET:
        logging.getLogger(__name__).critical("crash point %s:%s reached: exiting", point, detail)
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
