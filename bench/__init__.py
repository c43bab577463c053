"""cribwatch benchmarks: figures printed beside a baseline measured in the same run."""
