"""The cluster benchmark (``make bench``): raftdb beside etcd and PySyncObj.

Run it as ``python -m benchmarks.cluster`` from the repository root (``--help``
lists the options). One after another, and interleaved over repeats, it
starts a 3-node raftdb cluster, a 3-node etcd 3.4 cluster, a 3-node
PySyncObj-backed server (:mod:`benchmarks.cluster.pysyncobj_server`), and
three processes each of a trivial Starlette app and a bare ASGI app
(:mod:`benchmarks.cluster.apps`), all on 127.0.0.1; drives each with ``wrk``
(``load.lua``) at 1, 16 and 64 connections, leader-only and spread over the
three nodes; and writes the table and the plot (:mod:`benchmarks.cluster.report`).

Modules:

- :mod:`~benchmarks.cluster.procs`: free ports, process groups that are always
  stopped, small HTTP helpers;
- :mod:`~benchmarks.cluster.systems`: how each system starts, finds its leader,
  is preloaded and stops;
- :mod:`~benchmarks.cluster.wrk`: ``wrk`` runs and their JSON results;
- :mod:`~benchmarks.cluster.report`: medians, ratios against the issue's
  targets, the Markdown section of ``docs/benchmarks.md`` and the PNG plot;
- :mod:`~benchmarks.cluster.runner`: the command line, the run plan, the
  memory run and the profiling run.

None of these files is a pytest test module (``testpaths = ["tests"]``, and no
file here is named ``test_*.py``).
"""
