"""Benchmarks of methods: how well they adapt, on suites of tasks x methods x seeds.

:mod:`segshift.bench.suite` reads benchmark suites (tasks x methods x seeds, YAML),
:mod:`segshift.bench.runner` runs them resumably (``segshift benchmark``),
:mod:`segshift.bench.pipeline` predicts and evaluates a trained run on a labelled test set (the
one implementation the runner, the demo and ``segshift test`` share) and
:mod:`segshift.bench.tables` turns the per-case evaluations into tables and paired tests
(see ``docs/benchmark.md``); :mod:`segshift.bench.qc` measures, against the test labels, how
well the label-free QC scores of ``qc.csv`` flag the badly segmented cases;
:mod:`segshift.report.html` writes the HTML report.

How fast the networks run on this machine is :mod:`segshift.perf`'s job.
"""
