"""Layer 5, what to run: a profile's runs (:mod:`.profile`: ``load_profile``, ``Profile``, ``Run``,
the ``--set`` settings), a notebook's parameters (:mod:`.params`) and a profile's ``slurm:``
block (:mod:`.slurm`)."""
from dml_core.profiles.profile import *  # noqa: F401,F403  (the profile's public names)
from dml_core.profiles.profile import __all__  # noqa: F401
