"""Layer 7, the batch runner (``python -m dml_core.batch --profile NAME``): :mod:`.execution` runs one
notebook into its run folder and decides from fingerprints whether it must run again
(in a kernel a worker keeps from one run to the next, :mod:`.kernels`);
:mod:`.cluster` runs them as Slurm jobs (submitit); :mod:`.preflight` checks a profile before a
launch (``--check``); :mod:`.progress` prints progress lines; :mod:`.driver` plans a profile, runs
its stages and is the command line."""
from dml_core.batch.driver import *  # noqa: F401,F403  (the driver's public names)
from dml_core.batch.driver import __all__  # noqa: F401
