"""The open-file limit: raised at start as far as the hard limit allows, and reported."""

from __future__ import annotations

import subprocess
import sys

RAISE = (
    "import resource; from findme.capacity import raise_open_files_limit; "
    "print(raise_open_files_limit().sentence()); "
    "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
)


def _lowered(soft: int) -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_low_soft_limit_is_raised_to_the_hard_one() -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    started = subprocess.run(
        [sys.executable, "-c", RAISE],
        preexec_fn=lambda: _lowered(256),
        capture_output=True,
        text=True,
        check=True,
    )
    sentence, soft_now = started.stdout.splitlines()
    assert int(soft_now) == min(hard, 1_048_576)
    assert "(raised from 256)" in sentence
    assert f"room for {int(soft_now) - 256} live pages" in sentence
