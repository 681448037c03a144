"""raftdb.kv.rwlock: readers share, writers exclude, waiting writers go first."""

from __future__ import annotations

import threading

from raftdb.kv.rwlock import RWLock

TIMEOUT = 10


def test_readers_share() -> None:
    lock = RWLock()
    inside = threading.Barrier(3, timeout=TIMEOUT)

    def reader() -> None:
        with lock.read():
            inside.wait()  # all three readers are inside together

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    reader()
    for t in threads:
        t.join(TIMEOUT)


def test_a_writer_waits_for_readers_and_new_readers_wait_for_it() -> None:
    lock = RWLock()
    order: list[str] = []
    reader_in = threading.Event()
    release_reader = threading.Event()

    def first_reader() -> None:
        with lock.read():
            reader_in.set()
            release_reader.wait(TIMEOUT)
            order.append("reader 1 out")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("reader 2")

    r1 = threading.Thread(target=first_reader)
    r1.start()
    reader_in.wait(TIMEOUT)
    w = threading.Thread(target=writer)
    w.start()
    # Wait until the writer is queued, without sleeping: poll the lock's state.
    for _ in range(10**7):
        with lock._cond:
            if lock._writers_waiting:
                break
    else:
        raise AssertionError("the writer never queued")
    r2 = threading.Thread(target=late_reader)
    r2.start()
    release_reader.set()
    for t in (r1, w, r2):
        t.join(TIMEOUT)
    assert order == ["reader 1 out", "writer", "reader 2"]


def test_writers_exclude_each_other() -> None:
    lock = RWLock()
    counter = [0]

    def work() -> None:
        for _ in range(2000):
            with lock.write():
                value = counter[0]
                counter[0] = value + 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert counter[0] == 8000
