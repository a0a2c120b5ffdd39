"""`make plots`: DVC's plots (dvc.yaml, top-level ``plots``) as one HTML page that renders with no
network: ``dvc plots show``, or ``dvc plots diff REV...`` to put experiments on the same charts,
with an HTML template that carries Vega, Vega-Lite and Vega-Embed inline (vl-convert's bundle)
instead of DVC's default ``<script src="https://cdn...">`` links.

    python -m stages.plots [REV ...] [--out dvc_plots]

Prints the page's path (``dvc_plots/index.html``).
"""

import argparse
import subprocess
import sys
from pathlib import Path

from pipelines.core.io import write_text

TEMPLATE = Path(".dvc/tmp/plots-offline.html")  # generated once; .dvc/tmp is DVC's own ignored scratch
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>DVC plots (offline)</title>
    <script>__BUNDLE__</script>
    <style>table { border-spacing: 15px; }</style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def vegalite_version() -> str:
    """The newest Vega-Lite 5 that vl-convert bundles: DVC's templates are Vega-Lite v5 specs."""
    import vl_convert

    fives = [v for v in vl_convert.get_vegalite_versions() if v.startswith("5.")]
    return max(fives, key=lambda v: tuple(int(p) for p in v.split(".")))


def template(path: Path = TEMPLATE) -> Path:
    """The offline page template (DVC fills ``{plot_divs}``; no ``{scripts}``: no CDN links)."""
    if not path.exists():
        import vl_convert

        bundle = vl_convert.javascript_bundle(vl_version=vegalite_version())
        write_text(path, PAGE.replace("__BUNDLE__", bundle))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.plots", description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="*", help="revisions or experiment names to compare (dvc plots diff)")
    parser.add_argument("--out", default="dvc_plots")
    args = parser.parse_args(argv)
    command = ["dvc", "plots", "diff", *args.revs] if args.revs else ["dvc", "plots", "show"]
    proc = subprocess.run([*command, "--html-template", str(template().resolve()), "-o", args.out])
    if proc.returncode:
        raise SystemExit(proc.returncode)
    print(f"plots: {Path(args.out).resolve() / 'index.html'} (renders offline)")


if __name__ == "__main__":
    sys.exit(main())
