"""The two ways losslab stops early: a problem the user can fix, and a signal."""

from __future__ import annotations

import signal


class LosslabError(Exception):
    """A problem the user can fix: bad input, missing data, unreachable tracking store.

    The CLI prints it as one line on stderr and exits 2.
    """


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM arrived.

    A BaseException, not an Exception, so no `except Exception` on the way up (ours,
    Lightning's, Hydra's) swallows it; Lightning's own KeyboardInterrupt handling (which
    ends in `exit(1)`) never sees it either. The CLI exits 128 + the signal number.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
