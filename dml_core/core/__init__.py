"""Layer 1, the core every other layer stands on: where things live (:mod:`.paths`), atomic file
writes (:mod:`.io`) and file locks (:mod:`.locks`). It imports nothing else of ``dml_core``."""
