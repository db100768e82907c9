"""Speed benchmarks of occnet_ros (``occnet_bench``, ``make bench``). Not tests: nothing here asserts a
speed; the report prints each target next to the measured median with PASS/MISS.

Sections (one module each): :mod:`.floor` (machine: core count, matmul rate, decoder rate by chunk
size), :mod:`.mise_vs_dense`, :mod:`.latency` (per-object stages), :mod:`.queries` (Python API query
throughput), :mod:`.node_throughput` (the ROS node in another process: service throughput and latency
under load, frame throughput, peak memory); :mod:`.report` writes ``results.json`` and ``results.md``.
"""
