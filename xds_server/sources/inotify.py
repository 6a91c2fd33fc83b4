"""Linux inotify through libc: a non-blocking descriptor and its events.

The folder source registers ``Inotify.fd`` with the event loop (``loop.add_reader``) and reads
every queued event when the kernel signals it, so a change is seen as soon as it happens: no
polling and no built-in debounce.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from dataclasses import dataclass

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

FOLDER_EVENTS = (
    IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_ONLYDIR
)
_EVENT_HEADER = struct.Struct("iIII")
_READ_SIZE = 64 * 1024
# An event's header and a name of NAME_MAX bytes with its terminating NUL.
_LARGEST_EVENT = _EVENT_HEADER.size + 255 + 1


@dataclass(frozen=True)
class InotifyEvent:
    wd: int
    mask: int
    cookie: int
    name: str


def parse_events(data: bytes) -> list[InotifyEvent]:
    """The events in one read from an inotify descriptor."""
    events: list[InotifyEvent] = []
    offset = 0
    while offset + _EVENT_HEADER.size <= len(data):
        wd, mask, cookie, length = _EVENT_HEADER.unpack_from(data, offset)
        start = offset + _EVENT_HEADER.size
        raw = data[start : start + length].split(b"\0", 1)[0]
        events.append(InotifyEvent(wd, mask, cookie, os.fsdecode(raw)))
        offset = start + length
    return events


class Inotify:
    """An inotify descriptor (non-blocking), through libc."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        try:
            self._init1 = libc.inotify_init1
            self._add_watch = libc.inotify_add_watch
            self._rm_watch = libc.inotify_rm_watch
        except AttributeError as exc:
            raise OSError(errno.ENOSYS, "inotify is not available on this system") from exc
        self._init1.argtypes = [ctypes.c_int]
        self._init1.restype = ctypes.c_int
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._add_watch.restype = ctypes.c_int
        self._rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        self._rm_watch.restype = ctypes.c_int
        fd = int(self._init1(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_init1: {os.strerror(code)}")
        self.fd = fd

    def add_watch(self, path: str, mask: int) -> int:
        wd = int(self._add_watch(self.fd, os.fsencode(path), mask))
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return wd

    def rm_watch(self, wd: int) -> None:
        self._rm_watch(self.fd, wd)

    def read_events(self) -> list[InotifyEvent]:
        """Every event queued now (an empty list if none).

        A read returns every queued event that fits in its buffer, so only a read that left
        less room than the largest event is followed by another.
        """
        events: list[InotifyEvent] = []
        while True:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return events
            events.extend(parse_events(data))
            if len(data) <= _READ_SIZE - _LARGEST_EVENT:
                return events

    def close(self) -> None:
        os.close(self.fd)
