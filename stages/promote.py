"""`make promote`: write reports/search/best_params.yaml into params.yaml (comments kept), so the
next `dvc repro` rebuilds the chosen trial's model.

    python -m stages.promote [--best reports/search/best_params.yaml] [--params params.yaml] [--dry-run] [--force]

Refuses (exit 2, one line, params.yaml untouched) a trial that does not improve on the current
configuration's own trial in the study within the 95% intervals (docs/decisions.md);
``--force`` (``make promote FORCE=1``) promotes it anyway and says what is lost.
"""

import argparse
import os
import sys

from pipelines.core.errors import UserError
from pipelines.promote import BEST_PARAMS, promote


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.promote", description=__doc__.splitlines()[0])
    parser.add_argument("--best", default=str(BEST_PARAMS))
    parser.add_argument("--params", default=os.environ.get("PARAMS_FILE", "params.yaml"))
    parser.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
    parser.add_argument("--force", action="store_true",
                        help="promote even a trial that does not improve on the current configuration's trial")
    args = parser.parse_args(argv)
    try:
        changes = promote(args.best, args.params, dry_run=args.dry_run, force=args.force,
                          say=lambda line: print(f"promote: {line}"))
    except UserError as exc:
        print(f"promote: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if not changes:
        print(f"promote: {args.params} already has every value of {args.best}")
        return
    verb = "would change" if args.dry_run else "changed"
    for key, (old, new) in changes.items():
        print(f"promote: {verb} {key}: {old!r} -> {new!r}")
    if not args.dry_run:
        print("promote: run `dvc repro` (or `make repro`) to rebuild the chosen trial")


if __name__ == "__main__":
    main()
