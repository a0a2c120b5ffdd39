"""`make compare`: `dvc exp show` narrowed to what tells experiments apart, readable in a
120-column terminal: the headline of ``metrics/summary.json`` and only the params that differ
between the rows shown. Extra arguments go to ``dvc exp show`` (``-A``, ``-n 5``, ``--rev ...``).

    python -m stages.compare [DVC EXP SHOW ARGS ...]
"""

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from pipelines.tracking import flatten

# drop_pp, size_ratio, p50_ms_bs1 and runtime are in summary.json too; left out here so that two or
# three changed params still fit.
COLUMNS = ["Experiment", "acc", "mb", "p50_ms", "speedup", "noisy"]


def changed_params(args: list[str], params_file: str = "params.yaml") -> list[str]:
    """The params columns that ``dvc exp show --only-changed`` keeps for these rows."""
    keys = set(flatten("", yaml.safe_load(Path(params_file).read_text()) or {}))
    shown = subprocess.run(["dvc", "exp", "show", "--csv", "--only-changed", *args], capture_output=True,
                           text=True)
    if shown.returncode:
        sys.stderr.write(shown.stderr)
        raise SystemExit(shown.returncode)
    header = next(csv.reader(io.StringIO(shown.stdout)), [])
    return [name for name in header if name in keys]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    keep = "|".join(re.escape(name) + "$" for name in [*COLUMNS, *changed_params(args)])
    os.execvp("dvc", ["dvc", "exp", "show", "--no-pager", "--drop", ".*", "--keep", keep, *args])


if __name__ == "__main__":
    main()
