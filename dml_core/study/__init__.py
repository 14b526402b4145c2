"""Layer 7, what the notebooks call: :mod:`.notebooks` (notebooks 00-06 and 08: prepare, train, show,
tabulate), :mod:`.toy` (notebook 07's STL-10 toy) and :mod:`.query` (what a trained run retrieves for
any image). ``from dml_core import study`` gives the notebook helpers directly."""
from dml_core.study.notebooks import *  # noqa: F401,F403  (the notebook helpers)
from dml_core.study.notebooks import __all__  # noqa: F401
