"""``fastcam project``: a time-to-train projection for N / 2N / 4N nodes.

From one ``fastcam bench`` JSON (per-accelerator training and evaluation
throughput), the epochs a configuration needs at its global batch (the user's
own MLPerf logs, the MLPerf HPC reference convergence points, or the published
baseline) and a model of the gradient all-reduce, it projects minutes to 0.82
per scale. Modules: ``model`` (the arithmetic), ``bench_input`` (reading the
bench JSON), ``epochs`` (where the epoch count comes from), ``plot``, ``cli``.
"""
