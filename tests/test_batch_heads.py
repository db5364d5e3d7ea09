"""Which photos of an event open a batch and go ahead to the engine's urgent lane."""

from __future__ import annotations

from findme.engines.local.batch_heads import BatchHeads


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_seconds_of_a_batch_are_its_head_per_event() -> None:
    clock = Clock()
    heads = BatchHeads(head_s=10, quiet_s=60, clock=clock)
    assert heads.is_head(1)
    clock.now += 9
    assert heads.is_head(1)
    clock.now += 2
    # 11 s into event 1's batch: its photos wait their turn; event 2's batch is just starting.
    assert not heads.is_head(1)
    assert heads.is_head(2)
    # Photos keep coming every 50 s: still the same batch, however long it runs.
    for _ in range(5):
        clock.now += 50
        assert not heads.is_head(1)


def test_a_quiet_spell_opens_a_new_batch() -> None:
    clock = Clock()
    heads = BatchHeads(head_s=10, quiet_s=60, clock=clock)
    heads.is_head(1)
    clock.now += 30
    assert not heads.is_head(1)
    clock.now += 61
    assert heads.is_head(1)
