"""wsloss's benchmarks: ``python -m benchmarks`` (run.py) runs every op on every backend."""
