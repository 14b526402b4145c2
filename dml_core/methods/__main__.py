"""``python -m dml_core.methods``: the declared methods and the recipe keys.

Without options it prints every declared method (its notebook, its rows, its loss
hyper-parameters) and the recipe keys; ``--write`` writes ``docs/RECIPE_KEYS.md`` from the schema.
"""
from __future__ import annotations

import argparse

from dml_core.methods.recipes import keys_markdown, list_recipes, write_keys_document
from dml_core.methods.registry import SPECS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dml_core.methods",
                                 description="The declared methods and the recipe keys.")
    ap.add_argument("--write", action="store_true",
                    help="write docs/RECIPE_KEYS.md from dml_core/methods/schema.py")
    if ap.parse_args(argv).write:
        print("wrote", write_keys_document())
        return 0
    for name, spec in SPECS.items():
        rows = len(list_recipes(method=name)) if spec.rows else 0
        print(f"{name:<17} {spec.path.rpartition(':')[2]:<22} notebook {spec.notebook or '-':<20} "
              f"{rows:>2} recipe(s)  loss keys: {', '.join(spec.loss_hparams) or '-'}")
    print()
    print(keys_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
