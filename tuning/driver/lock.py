"""One driver per search: an exclusive ``fcntl.flock`` on ``<search>/.driver.lock``, held
while the driver runs. The OS drops it when the process ends, however it ends, so a
killed driver never blocks the ``--resume`` that follows it."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

LOCK_FILE = ".driver.lock"


class SearchLock:
    """``with SearchLock(folder, name):`` (or ``acquire()`` first, then ``with``) holds the
    search's lock, or raises a one-line ValueError naming the driver that holds it."""

    def __init__(self, folder: str | Path, name: str):
        self.path, self.name = Path(folder) / LOCK_FILE, name
        self._file = None

    def __enter__(self) -> SearchLock:
        return self if self._file is not None else self.acquire()

    def acquire(self) -> SearchLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115  (held until __exit__)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown process"
            f.close()
            raise ValueError(f"search {self.name} is being run by another driver ({holder}, lock {self.path}); "
                             f"wait for it to end, or give another --name") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self._file is not None:
            self._file.close()  # releases the lock
            self._file = None
