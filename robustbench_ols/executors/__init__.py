"""Running a grid's cells: the shared cell logic (cells.py), one module per backend behind the `BACKENDS` registry
(backends.py: local, ray, slurm, and plugins), and what `rbols matrix` prints about a grid (estimate.py)."""
from robustbench_ols.executors import local, ray, slurm  # noqa: F401  (registers the built-in backends)
from robustbench_ols.executors.backends import BACKENDS, Backend, register  # noqa: F401
