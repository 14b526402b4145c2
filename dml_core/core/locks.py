"""One writer at a time: an advisory file lock that names its holder.

``with FileLock(path, what="the batch of profile demo", timeout=0):`` takes an exclusive
``fcntl.flock`` on ``path`` (created if absent) and writes the holder into it as JSON
(``pid``, ``host``, ``started``, ``what``). The kernel releases a flock when its process dies,
so a lock left by a killed process (a *stale* lock: its pid is dead) never blocks anyone; the
next holder notes it and takes over. A second writer either waits (``timeout=None``: for ever,
saying once whom it waits for; ``timeout=s``: at most ``s`` seconds) or is refused at once
(``timeout=0``) with a :class:`LockHeldError` that names the holder.

Used for: the batch (``runs/<profile>/.batch.lock``), each training run folder
(``<run_dir>/.lock``), each prepared data set (``<data_root>/<ds>/.prepare.lock``) and each
image cache. Within one process a lock is re-entrant (a nested ``with`` on the same path is a
no-op). POSIX only (Linux, macOS).

The lock file is opened with ``O_NOFOLLOW``: a symbolic link in its place is refused
(:class:`LockError`), never followed (writing the holder would overwrite the link's target).
On a file system without a working ``flock`` (``ENOLCK``, ``ENOSYS``, ``EOPNOTSUPP``: some NFS
and Lustre mounts) two processes could both "hold" the lock, so the lock is refused with a
:class:`NoFlockError` that says how to proceed; setting ``DML_ALLOW_UNLOCKED=1`` (the batch's
``--allow-unlocked``) accepts the risk: the lock is then skipped with a warning, and making sure
that one process at a time writes each folder is up to you. A mount with node-local locks only
(Lustre ``-o localflock``) cannot be detected: there, locks do not see other nodes.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_HELD: dict[str, list] = {}  # resolved path -> [fd, depth] for locks held by this process


#: Set to 1 to run without locks on a file system whose flock does not work (at your risk).
ALLOW_UNLOCKED_ENV = "DML_ALLOW_UNLOCKED"
#: flock errors that mean "this file system has no working flock".
NO_FLOCK_ERRNOS = frozenset(e for e in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP,
                                        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.EINVAL))
_WARNED_UNLOCKED: set[str] = set()


class LockError(RuntimeError):
    """The lock cannot be taken (base class); the message says why and what to do."""


class NoFlockError(LockError):
    """The lock file's file system has no working ``flock``; the message says how to proceed."""

    def __init__(self, path: Path, what: str, exc: OSError):
        self.path = Path(path)
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        super().__init__(
            f"cannot lock {what}: the file system of {path} does not support file locks "
            f"(flock: {name}, {exc.strerror}; some NFS and Lustre mounts). Without them two "
            "processes could write the same folder at once and corrupt it, so nothing was run. "
            "Put the runs root and the data root (DML_RUNS_ROOT, DML_DATA_ROOT) on a file system "
            "with working locks (a local disk, NFSv4, Lustre mounted with -o flock), or accept "
            f"the risk with {ALLOW_UNLOCKED_ENV}=1 (python -m dml_core.batch --allow-unlocked) "
            "and make sure yourself that only one process writes each folder.")


class LockHeldError(LockError):
    """Another process holds the lock; ``holder`` is what it wrote (pid, host, started, what)."""

    def __init__(self, path: Path, what: str, holder: dict, waited: float | None = None):
        self.path, self.holder = Path(path), holder
        waited_txt = f" after waiting {waited:.0f} s" if waited else ""
        super().__init__(
            f"{what} is in use by another process{waited_txt}: {describe(holder)} "
            f"(lock file {path}). Wait for it to finish, or stop it (kill {holder.get('pid', '?')}); "
            "a lock whose process has died is released automatically.")


def describe(holder: dict) -> str:
    """``pid 123 on host x since 2026-11-29T00:10:00Z (python -m dml_core.batch ...)``."""
    if not holder:
        return "an unknown holder"
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('started', '?')}"
    return text + (f" ({holder['command']})" if holder.get("command") else "")


def read_holder(path: str | os.PathLike) -> dict:
    """What the lock file at ``path`` says about its (last) holder; {} when unreadable."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, TypeError):
        return True
    return True


class FileLock:
    """Exclusive lock on ``path``; see the module docstring.

    what: words for messages ("the run folder runs/demo/01"); timeout: None waits for ever, 0
    refuses at once, s > 0 waits at most s seconds; say: where the "waiting for" line goes.
    """

    def __init__(self, path: str | os.PathLike, what: str | None = None,
                 timeout: Optional[float] = None, poll: float = 0.2,
                 say: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.what = what or str(self.path.parent)
        self.timeout, self.poll = timeout, poll
        self.say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stale: dict | None = None  # the dead holder found when acquiring, if any

    def _key(self) -> str:  # the pid too: a forked child does not inherit its parent's locks
        return f"{os.getpid()}:{self.path.resolve()}"

    def acquire(self) -> "FileLock":
        key = self._key()
        if key in _HELD:
            _HELD[key][1] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP or self.path.is_symlink():
                raise LockError(
                    f"cannot lock {self.what}: the lock file {self.path} is a symbolic link (to "
                    f"{os.readlink(self.path)}); a lock file must be a plain file, and following "
                    "the link would overwrite its target. Remove the link and run again.") from None
            raise
        if fcntl is None:  # pragma: no cover
            _HELD[key] = [fd, 1]
            return self
        t0, announced = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = read_holder(self.path)
                waited = time.monotonic() - t0
                if self.timeout is not None and waited >= self.timeout:
                    os.close(fd)
                    raise LockHeldError(self.path, self.what, holder, waited) from None
                if not announced:
                    self.say(f"waiting for {self.what}: in use by {describe(holder)}")
                    announced = True
                time.sleep(self.poll)
            except OSError as exc:
                if exc.errno not in NO_FLOCK_ERRNOS:
                    os.close(fd)
                    raise
                if os.environ.get(ALLOW_UNLOCKED_ENV, "").strip().lower() not in (
                        "1", "true", "yes"):
                    os.close(fd)
                    raise NoFlockError(self.path, self.what, exc) from None
                folder = str(self.path.parent)
                if folder not in _WARNED_UNLOCKED:  # accepted risk: say so once per folder
                    _WARNED_UNLOCKED.add(folder)
                    self.say(f"warning: {self.what}: no file locks on this file system "
                             f"({ALLOW_UNLOCKED_ENV}=1): proceeding UNLOCKED")
                break
        previous = read_holder(self.path)
        if previous.get("pid") and previous.get("host") == socket.gethostname() \
                and not previous.get("released") and not pid_alive(previous["pid"]):
            self.stale = previous
            self.say(f"{self.what}: its previous holder ({describe(previous)}) died without "
                     "releasing the lock; taking over")
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "what": self.what, "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _HELD[key] = [fd, 1]
        return self

    def release(self) -> None:
        key = self._key()
        entry = _HELD.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _HELD[key]
        fd = entry[0]
        try:  # mark it released, so the next holder does not call it stale
            holder = read_holder(self.path)
            holder["released"] = True
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError:
            pass
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                pass
        os.close(fd)

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
