"""Benchmarks: how well methods adapt (suites), and how fast the networks run on this machine.

:mod:`segshift.bench.suite` reads benchmark suites (tasks x methods x seeds, YAML),
:mod:`segshift.bench.runner` runs them resumably (``segshift benchmark``),
:mod:`segshift.bench.pipeline` predicts and evaluates a trained run on a labelled test set (the
one implementation the runner, the demo and ``segshift test`` share) and
:mod:`segshift.bench.tables` turns the per-case evaluations into tables and paired tests
(see ``docs/benchmark.md``); :mod:`segshift.bench.qc` measures, against the test labels, how
well the label-free QC scores of ``qc.csv`` flag the badly segmented cases;
:mod:`segshift.report.html` writes the HTML report.

:mod:`segshift.bench.speed` (``segshift bench speed``) measures, per segmentation network and
precision/layout/compile variant (bf16 called native exactly where ``train.precision: auto``
takes it: :mod:`segshift.utils.machine`), training throughput in slices/s, the achieved FLOP/s
against the machine's measured matmul peak, inference seconds per cine volume and the
process's peak memory. The functions are plain Python and return dicts, so a notebook or a
script can call them as well as the command line.

Figures are only meaningful on a quiet machine: anything else using the CPU cores (another
training run, a second benchmark) lowers them all.
"""
