"""Linux inotify through libc: what one look at the descriptor returns."""

from __future__ import annotations

from pathlib import Path

from xds_server.sources.inotify import IN_CREATE, Inotify


def test_nothing_queued_reads_as_no_events(tmp_path: Path) -> None:
    inotify = Inotify()
    try:
        inotify.add_watch(str(tmp_path), IN_CREATE)
        assert inotify.read_events() == []
    finally:
        inotify.close()


def test_every_queued_event_is_read_even_past_one_read_buffer(tmp_path: Path) -> None:
    # 400 events of 224 bytes each: more than one 64 KiB read holds.
    names = [f"{i:04d}" + "x" * 200 for i in range(400)]
    inotify = Inotify()
    try:
        inotify.add_watch(str(tmp_path), IN_CREATE)
        for name in names:
            (tmp_path / name).touch()
        assert [event.name for event in inotify.read_events()] == names
        assert inotify.read_events() == []
    finally:
        inotify.close()
