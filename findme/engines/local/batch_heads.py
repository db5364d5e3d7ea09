"""Which photos open a batch, and may go ahead of it to the engine's urgent lane.

A photographer's upload of a hundred camera photos keeps the engine busy for a minute; its
attendees, waiting on "my photos", should see the first matches within seconds, not after the
photos queued ahead. So the photos an event's jobs start in the first seconds of a batch are
urgent: they take the engine's urgent lane whenever it is free (pool.py). A batch is the
event's photos started with no quiet spell of `QUIET_S` between them, on this instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache

# The head of a batch: long enough for the first photos (about a second each in the urgent
# lane) to show matches while the batch pours in, short enough that a long upload's photos
# go on at the bulk lane's lower priority, which keeps pages quick.
HEAD_S = 10.0
# Photos of an event started this long after its previous one open a new batch.
QUIET_S = 60.0
# Events with a batch under way at once, at most; beyond, the oldest is forgotten (its next
# photo then opens a batch again, which costs nothing but priority).
MAX_EVENTS = 10_000


class BatchHeads:
    def __init__(
        self,
        *,
        head_s: float = HEAD_S,
        quiet_s: float = QUIET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._head_s = head_s
        # event id -> when its batch began; an entry lives `quiet_s` after its last photo.
        self._began: TTLCache[int, float] = TTLCache(maxsize=MAX_EVENTS, ttl=quiet_s, timer=clock)
        self._clock = clock

    def is_head(self, event_id: int) -> bool:
        """Note that a photo of `event_id` starts now; whether it is in its batch's head."""
        now = self._clock()
        began = self._began.get(event_id, now)
        # Written again on every photo, so the entry's lifetime counts from the latest one.
        self._began[event_id] = began
        return now - began <= self._head_s
