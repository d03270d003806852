"""Inference on the model: MAP (``map``, ``profile``, ``init``), ``nuts``, ``posterior``,
and the Gauss-Newton ``solvers``.
"""
