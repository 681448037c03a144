"""Issue 15's evaluation of HTTP in worker processes in front of one Raft process.

See ``python -m benchmarks.multicore --help`` and docs/architecture.md ("More
than one core"). Nothing here is part of the server: it is the measured case
for (or against) building it.
"""
