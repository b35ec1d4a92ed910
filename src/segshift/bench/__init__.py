"""Benchmarks: how fast the networks train and predict on this machine, and how close to its peak.

:mod:`segshift.bench.speed` (``segshift bench speed``) measures, per segmentation network and
precision/layout/compile variant, training throughput in slices/s, the achieved FLOP/s
against the machine's measured matmul peak, inference seconds per cine volume and the
process's peak memory. The functions are plain Python and return dicts, so a notebook or a
script can call them as well as the command line.

Figures are only meaningful on a quiet machine: anything else using the CPU cores (another
training run, a second benchmark) lowers them all.
"""
