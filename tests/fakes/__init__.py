"""Stand-ins for what cannot run here (AWS), shared by the tests and the benchmarks."""
