"""raftdb.node.disk_thread: one thread, jobs in order, results and errors handed back
to the loop, cancellation that never half-does a job, and a shutdown that finishes
what was queued."""

from __future__ import annotations

import asyncio
import threading

import pytest

from raftdb.node.disk_thread import DiskThread, Inbox


def test_jobs_run_in_order_on_one_thread_and_return_their_results() -> None:
    asyncio.run(_test_jobs_run_in_order_on_one_thread_and_return_their_results())


async def _test_jobs_run_in_order_on_one_thread_and_return_their_results() -> None:
    worker = DiskThread("test-disk")
    seen: list[tuple[int, str]] = []

    def job(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * n

    futures = [worker.submit(job, n) for n in range(50)]
    assert await asyncio.gather(*futures) == [n * n for n in range(50)]
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-disk"}
    await asyncio.to_thread(worker.shutdown)


def test_an_error_reaches_the_awaiting_side_and_the_thread_goes_on() -> None:
    asyncio.run(_test_an_error_reaches_the_awaiting_side_and_the_thread_goes_on())


async def _test_an_error_reaches_the_awaiting_side_and_the_thread_goes_on() -> None:
    worker = DiskThread("test-disk")

    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        await worker.submit(fail)
    assert await worker.submit(lambda: "still working") == "still working"
    await asyncio.to_thread(worker.shutdown)


def test_a_cancelled_future_does_not_stop_its_job() -> None:
    asyncio.run(_test_a_cancelled_future_does_not_stop_its_job())


async def _test_a_cancelled_future_does_not_stop_its_job() -> None:
    worker = DiskThread("test-disk")
    gate = threading.Event()
    done: list[str] = []

    def slow() -> str:
        gate.wait(10)
        done.append("slow")
        return "slow"

    first = worker.submit(slow)
    second = worker.submit(done.append, "next")
    first.cancel()
    gate.set()
    await second
    assert done == ["slow", "next"]
    assert first.cancelled()
    await asyncio.to_thread(worker.shutdown)


def test_shutdown_finishes_the_queued_jobs_then_refuses_more() -> None:
    asyncio.run(_test_shutdown_finishes_the_queued_jobs_then_refuses_more())


async def _test_shutdown_finishes_the_queued_jobs_then_refuses_more() -> None:
    worker = DiskThread("test-disk")
    gate = threading.Event()
    done: list[int] = []
    worker.submit(gate.wait, 10)
    for n in range(5):
        worker.submit(done.append, n)
    stopping = asyncio.create_task(asyncio.to_thread(worker.shutdown))
    gate.set()
    await stopping
    assert done == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="after shutdown"):
        worker.submit(done.append, 5)
    worker.shutdown()  # twice is fine


def test_a_thread_never_started_shuts_down_at_once() -> None:
    worker = DiskThread("test-disk")
    worker.shutdown()
    with pytest.raises(RuntimeError):
        asyncio.run(_submit(worker))


async def _submit(worker: DiskThread) -> None:
    await worker.submit(lambda: None)


def test_threads_sharing_an_inbox_hand_back_every_result_in_order() -> None:
    asyncio.run(_test_threads_sharing_an_inbox_hand_back_every_result_in_order())


async def _test_threads_sharing_an_inbox_hand_back_every_result_in_order() -> None:
    inbox = Inbox()
    first, second = DiskThread("test-disk-1", inbox), DiskThread("test-disk-2", inbox)
    gate = threading.Event()
    settled: list[str] = []

    def job(name: str) -> str:
        gate.wait(10)
        return name

    futures = [
        t.submit(job, f"{t_name}-{n}")
        for n in range(20)
        for t, t_name in ((first, "a"), (second, "b"))
    ]
    for future in futures:
        future.add_done_callback(lambda f: settled.append(f.result()))
    gate.set()
    results = await asyncio.gather(*futures)
    assert results == [f"{t}-{n}" for n in range(20) for t in ("a", "b")]
    # Each thread's results are settled in the order its jobs ran.
    for t in ("a", "b"):
        assert [r for r in settled if r.startswith(t)] == [f"{t}-{n}" for n in range(20)]
    await asyncio.to_thread(first.shutdown)
    await asyncio.to_thread(second.shutdown)


def test_an_inbox_serves_a_new_loop_after_the_old_one_closed() -> None:
    inbox = Inbox()
    worker = DiskThread("test-disk", inbox)

    async def one(n: int) -> int:
        return await worker.submit(lambda: n)

    assert asyncio.run(one(1)) == 1
    assert asyncio.run(one(2)) == 2
    worker.shutdown()


def test_a_follow_up_runs_after_the_result_is_posted_and_before_the_next_job() -> None:
    asyncio.run(_test_a_follow_up_runs_after_the_result_is_posted_and_before_the_next_job())


async def _test_a_follow_up_runs_after_the_result_is_posted_and_before_the_next_job() -> None:
    """The apply thread's make_durable: the loop has the batch's result while the
    follow-up still runs, and the next job waits for it."""
    worker = DiskThread("test-disk")
    release = threading.Event()
    order: list[str] = []

    def follow_up() -> None:
        order.append("follow-up started")
        assert release.wait(30), "the loop never saw the result"
        order.append("follow-up done")

    def job(name: str, result: int) -> int:
        order.append(name)
        return result

    first = worker.submit_then(job, follow_up, "job", 1)
    second = worker.submit(job, "next job", 2)
    assert await first == 1  # settled while the follow-up blocks on release
    release.set()
    assert await second == 2
    assert order == ["job", "follow-up started", "follow-up done", "next job"]
    await asyncio.to_thread(worker.shutdown)


def test_a_failed_job_has_no_follow_up_and_a_failed_follow_up_stops_nothing() -> None:
    asyncio.run(_test_a_failed_job_has_no_follow_up_and_a_failed_follow_up_stops_nothing())


async def _test_a_failed_job_has_no_follow_up_and_a_failed_follow_up_stops_nothing() -> None:
    worker = DiskThread("test-disk")
    ran: list[str] = []

    def fail() -> None:
        raise OSError(5, "input/output error")

    def broken_follow_up() -> None:
        ran.append("broken")
        raise RuntimeError("follow-up bug")

    with pytest.raises(OSError, match="input/output"):
        await worker.submit_then(fail, lambda: ran.append("after a failure"))
    assert await worker.submit_then(lambda: "ok", broken_follow_up) == "ok"
    assert await worker.submit(lambda: "still working") == "still working"
    assert ran == ["broken"]
    await asyncio.to_thread(worker.shutdown)
