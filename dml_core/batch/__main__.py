"""``python -m dml_core.batch``: the batch runner's command line (:func:`dml_core.batch.driver.main`)."""
import sys

from dml_core.batch.driver import main

sys.exit(main())
