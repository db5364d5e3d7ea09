"""The table `make bench` ends with: each goal against the figure its benchmark printed."""

from __future__ import annotations

from bench.summary import GOALS, summary

# Lines as the benchmarks print them, with figures that meet their goal and figures that miss it.
LISTS = """\
/api/my-photos cached              p50    1.66 ms   p99    3.61 ms       4521 req/s   errors 0
/api/my-photos uncached            p50   10.23 ms   p99   21.53 ms        724 req/s   errors 0
/api/my-photos cached throughput / bare route: 55%
/api/all-photos cached throughput / bare route: 49%
/api/my-photos during the storm    p50    2.84 ms   p99    9.30 ms       2468 req/s   errors 0
"""
PIPELINE = """\
pipeline (HTTP upload + workers): 2.48 photos/s, 100 photos in 40.3 s (uploads done at 12.3 s)
pipeline / engine limit: 83%
first match: 1.78 s after the first upload was answered (2.17 s after it was sent)
"""


def test_each_goal_is_read_from_its_benchmark_and_judged(tmp_path) -> None:
    (tmp_path / "lists.txt").write_text(LISTS)
    (tmp_path / "pipeline.txt").write_text(PIPELINE)
    rows = {line.split("  ")[0]: line.split() for line in summary(tmp_path)[1:]}
    assert len(rows) == len(GOALS)
    verdicts = {name: " ".join(words[-4:]) for name, words in rows.items()}
    assert verdicts["100 camera photos processed"].endswith("40.3 s missed")
    assert verdicts["pipeline / engine limit"].endswith("83 % missed")
    assert verdicts["first match after the first upload"].endswith("1.78 s met")
    assert verdicts["/api/my-photos cached / bare route"].endswith("55 % met")
    assert verdicts["/api/all-photos cached / bare route"].endswith("49 % missed")
    assert verdicts["/api/my-photos uncached p50"].endswith("10.23 ms missed")
    assert verdicts["reads during a storm of uploads p99"].endswith("9.3 ms met")
    # bench.uploads did not run: said so, not guessed.
    for name in ("uploads / storage limit, 1 request", "uploads / storage limit, 10 requests"):
        assert verdicts[name].endswith("- not measured (bench.uploads)")
