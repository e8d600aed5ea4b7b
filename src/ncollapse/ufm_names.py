"""The UFM lab's option names, torch-free and outside the ``ufm`` package (whose ``__init__`` imports the solvers), so
``ncollapse ufm --help`` builds its choices without importing torch.

``problem.py``, ``solve.py`` and ``experiments.py`` validate against these same tuples; a test keeps
``FIXED_FRAME_NAMES`` equal to ``geometry.FIXED_FRAMES`` and ``EXPERIMENT_NAMES`` to ``experiments.EXPERIMENTS``.
"""

from __future__ import annotations

LOSSES = ("ce", "mse", "supcon", "ncmc_p", "ncmc_cosine")
BIASES = ("none", "free", "decay")
NORMALIZE = ("none", "features", "weights", "both", "batchnorm")
LAYERS = ("linear", "relu")
CONSTRAINTS = ("penalty", "ball")
FRAMES = ("fixed", "learned")
FIXED_FRAME_NAMES = ("etf", "orthogonal", "cube", "orthoplex")
FIXED = ("none", *FIXED_FRAME_NAMES, "multicenter")
OPTIMIZERS = ("gd", "adam", "lbfgs", "flow")
EXPERIMENT_NAMES = ("nc_dynamics", "minority_collapse", "small_init", "extended", "fixed_classifiers", "max_margin")
