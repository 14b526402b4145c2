"""Developer tools beside the package: :mod:`tools.rehearsal` (stand-in data sets and weights in the
real formats; ``python -m tools.rehearsal`` rehearses the full profile on them)."""
