"""Reads by key coalesce: callers waiting together share one read, and each gets its own value,
its own None, or the read's error."""

from __future__ import annotations

import asyncio

import pytest

from findme.batching import BatchLoader


class Store:
    def __init__(self, *, fail_first: bool = False) -> None:
        self.reads: list[list[int]] = []
        self.fail_first = fail_first

    async def load_many(self, keys):
        self.reads.append(sorted(keys))
        await asyncio.sleep(0.01)  # a query's round trip, during which others ask
        if self.fail_first and len(self.reads) == 1:
            raise ConnectionError("the database went away")
        return {key: f"value {key}" for key in keys if key % 10 != 7}


async def test_callers_waiting_together_share_one_read() -> None:
    store = Store()
    loader = BatchLoader(store.load_many)
    values = await asyncio.gather(*(loader.load(key) for key in range(20)))
    assert values == [None if key % 10 == 7 else f"value {key}" for key in range(20)]
    assert store.reads == [list(range(20))]


async def test_keys_asked_during_a_read_go_to_the_next_one_together() -> None:
    store = Store()
    loader = BatchLoader(store.load_many)
    first = asyncio.ensure_future(loader.load(1))
    await asyncio.sleep(0.005)  # the first read is under way
    later = await asyncio.gather(*(loader.load(key) for key in (2, 3, 4, 3)))
    assert await first == "value 1"
    assert later == ["value 2", "value 3", "value 4", "value 3"]
    assert store.reads == [[1], [2, 3, 4]]


async def test_a_read_is_bounded_and_the_rest_follow() -> None:
    store = Store()
    loader = BatchLoader(store.load_many, max_batch=8)
    await asyncio.gather(*(loader.load(key) for key in range(20)))
    assert [len(keys) for keys in store.reads] == [8, 8, 4]


async def test_a_failed_read_fails_its_callers_only() -> None:
    store = Store(fail_first=True)
    loader = BatchLoader(store.load_many)
    results = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    assert await loader.load(1) == "value 1"


async def test_a_caller_that_gives_up_leaves_the_others_their_value() -> None:
    store = Store()
    loader = BatchLoader(store.load_many)
    impatient = asyncio.ensure_future(loader.load(1))
    patient = asyncio.ensure_future(loader.load(1))
    await asyncio.sleep(0.002)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert await patient == "value 1"
