"""Which evaluations are running on this machine, so that a timing made beside
another one is known for what it is.

Two processes tuning at once share the cores and the memory bandwidth: one genome
timed at 2.39 µs in one of them took 41.87 µs in the other. Each evaluator, while
it builds or times, holds an exclusive lock on a file of its own in a directory
shared by every evokernel process of this user on this machine; another evaluator
counts the files whose lock it cannot take. A killed process's lock goes with it
(its file is removed by the next one to look). ``$EVOKERNEL_ACTIVITY_DIR`` names
another directory (processes that should see each other must share it).
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
import uuid
from pathlib import Path

ENV_VAR = "EVOKERNEL_ACTIVITY_DIR"


def activity_dir() -> Path | None:
    """The directory of running evaluations (made private to this user), or ``None``
    where it cannot be used (another user's, or not creatable): then nothing is
    marked."""
    path = Path(os.environ.get(ENV_VAR) or Path(tempfile.gettempdir()) / f"evokernel-{os.getuid()}" / "activity")
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return path


class Activity:
    """This process's evaluation, registered while ``with activity:`` (reentrant).

    >>> a, b = Activity(), Activity()
    >>> with a:
    ...     (a.others(), b.others())
    (0, 1)
    """

    def __init__(self) -> None:
        self._depth = 0
        self._fd: int | None = None
        self._path: Path | None = None

    def __enter__(self) -> "Activity":
        self._depth += 1
        if self._depth == 1:
            directory = activity_dir()
            if directory is not None:
                name = f"{os.getpid()}-{uuid.uuid4().hex}"
                path, temporary = directory / f"{name}.lock", directory / f".{name}"
                try:  # locked before it is seen, else another process would take it for a killed one's
                    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    os.rename(temporary, path)
                    self._fd, self._path = fd, path
                except OSError:
                    pass
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            try:
                os.unlink(self._path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = self._path = None

    def others(self) -> int:
        """How many other evaluations run on this machine now."""
        directory = activity_dir()
        if directory is None:
            return 0
        count = 0
        for path in directory.glob("*.lock"):
            if path == self._path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                count += 1  # held: that evaluation is running
            except OSError:
                pass
            else:  # nobody holds it: its process was killed
                try:
                    os.unlink(path)
                except OSError:
                    pass
            finally:
                os.close(fd)
        return count

    def __del__(self):
        if self._fd is not None:
            self._depth = 1
            self.__exit__()
