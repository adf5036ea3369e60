"""CPU benchmarks of fusedloss against native TensorFlow.

Run ``python -m benchmarks`` (``--quick``, ``--smoke``; ``--help``) from the repository
root: it runs the pytest-benchmark suite in ``benchmarks/`` and writes the JSON, a
Markdown table and a plot to ``results/``. ``pytest benchmarks`` runs the same suite.
"""

import os


def use_cpu_only():
    """This suite measures the CPU: TensorFlow must not place the native ops on a GPU,
    nor fusedloss pick its CUDA kernels. Effective only before either is imported, so
    the suite's entry points call it first; importing the package changes nothing."""
    os.environ["FUSEDLOSS_BACKEND"] = "cpu"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
