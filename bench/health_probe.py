"""Times GET /healthz every 0.1 s from a process of its own, until its stdin closes.

    .venv/bin/python -m bench.health_probe http://127.0.0.1:8000

Prints one line per probe: the milliseconds it took, or "failed". `bench/live.py` runs it
during a restart: probed from the bench's own process, /healthz would also wait for the bench's
event loop, busy with thousands of reconnecting pages.
"""

from __future__ import annotations

import sys
import threading
import time

import httpx

INTERVAL_S = 0.1


def main() -> None:
    url = sys.argv[1].rstrip("/")
    done = threading.Event()
    # The bench closes stdin to stop the probe.
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    with httpx.Client(base_url=url, timeout=30) as client:
        while not done.is_set():
            started = time.perf_counter()
            try:
                ok = client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            took_ms = (time.perf_counter() - started) * 1000
            print(f"{took_ms:.1f}" if ok else "failed", flush=True)
            done.wait(INTERVAL_S)


if __name__ == "__main__":
    main()
