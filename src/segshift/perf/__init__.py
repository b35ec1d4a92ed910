"""Performance of this machine: how fast the networks and a method's training steps run.

:mod:`segshift.perf.speed` (``segshift bench speed``) measures, per segmentation network and
precision/layout/compile variant (bf16 called native exactly where ``train.precision: auto``
takes it: :mod:`segshift.utils.machine`), training throughput in slices/s, the achieved FLOP/s
against the machine's measured matmul peak, inference seconds per cine volume and the
process's peak memory. :mod:`segshift.perf.profile` (``segshift bench profile``) splits a
method's training step into its parts (data, augmentation, each network's forward and
backward, the optimisers, validation, checkpoints). The functions are plain Python and return
dicts, so a notebook or a script can call them as well as the command line.

Figures are only meaningful on a quiet machine: anything else using the CPU cores (another
training run, a second benchmark) lowers them all.
"""
