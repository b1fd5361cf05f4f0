"""Imported once by each worker: runs the lazy imports a forked trial would otherwise pay each time.

Polygraphy's comparator imports optional array libraries (torch, when installed) on first use;
done here once, every trial forked from the worker starts with them loaded.
"""

import numpy as np

from autotune.verify import Tolerance, compare_outputs

compare_outputs({"y": np.zeros(2, np.float32)}, {"y": np.zeros(2, np.float32)}, Tolerance())
