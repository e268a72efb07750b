"""A fuzz harness for every decoder of remote input (issue 9): generators, targets and a
runner. The test suite runs a short pass (tests/test_fuzz.py); the long run is
``benchmarks/fuzz_decoders.py``."""
