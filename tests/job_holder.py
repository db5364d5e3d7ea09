"""A worker process that claims one job, prints its id and holds it until it is killed.

    python -m tests.job_holder DATABASE_URL DATA_DIR

What a crashed instance leaves behind, for the crash-recovery test and bench/recovery.py.
"""

from __future__ import annotations

import asyncio
import sys

from findme.db import Database, JobKind
from findme.jobs import ClaimedJob
from findme.pipeline import Pipeline
from findme.settings import Settings


async def hold_one_job(database_url: str, data_dir: str) -> None:
    settings = Settings.from_environ(
        {"FINDME_DATABASE_URL": database_url, "FINDME_DATA_DIR": data_dir}
    )
    db = Database(settings)

    async def hold(job: ClaimedJob) -> None:
        sys.stdout.write(f"{job.id}\n")
        sys.stdout.flush()
        await asyncio.Event().wait()

    handlers = {kind: hold for kind in JobKind}
    async with Pipeline(
        db=db, handlers=handlers, workers=1, lease_s=60, timeout_s=600, grace_s=1, retry_base_s=1
    ):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(hold_one_job(sys.argv[1], sys.argv[2]))
