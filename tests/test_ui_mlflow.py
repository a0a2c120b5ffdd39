"""The MLflow UI as a user sees it: after the pipeline has run (the session's `repo` fixture),
`mlflow server` over that repo's mlflow.db, the experiment's runs page in headless Chromium, every
pipeline parent expanded: each stage run of that execution is listed directly under its parent.

Needs Debian's `chromium` (`make test` installs it when it can). Without a browser this test
fails under CI, so CI cannot go green without looking at the UI, and skips elsewhere. A screenshot is saved next to the repo
(`<repo>/../ui/runs.png`) and its path printed. The repo itself is only read (the server's log and
the screenshots go beside it), so the other tests that share it see it as `dvc repro` left it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow

from tests.conftest import STAGES, free_port, require_chromium
from tests.headless import Browser

# [row index, run id, shown name] of every run-name link in the runs table, top to bottom.
ROWS_JS = """(() => [...document.querySelectorAll('[role=row] a[href*="/runs/"]')]
  .filter(a => /\\/runs\\/[0-9a-f]{32}$/.test(a.getAttribute('href')) && a.closest('[col-id*="Run Name"]'))
  .map(a => [Number(a.closest('[role=row]').getAttribute('row-index')),
             a.getAttribute('href').split('/runs/')[1], a.innerText.trim()])
  .sort((x, y) => x[0] - y[0]))()"""

EXPAND_JS = """(() => {{
  const link = document.querySelector('[role=row] a[href$="/runs/{run_id}"]');
  const row = link && link.closest('[role=row]');
  const button = row && row.querySelector('[col-id*="Run Name"] button');
  if (!button) return false;
  button.click();
  return true;
}})()"""


def _start_server(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = int(env.get("MLFLOW_PORT") or free_port())  # where the store's MLflow links point
    log_path = root.parent / "ui" / f"mlflow-server-{port}.log"
    log_path.parent.mkdir(exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--serve-artifacts", "--artifacts-destination", str(root / "mlartifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow server exited {proc.returncode}: {log_path.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise AssertionError(f"mlflow server did not answer on {url} within 120 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _look(binary: str, url: str, exp_id: str, parents: list[str], profile: Path, shot: Path) -> dict:
    """Open the runs page, expand each parent in turn, record the rows shown after each."""
    seen = {}
    async with Browser(binary, profile) as browser:
        await browser.open(f"{url}/#/experiments/{exp_id}/runs")
        await browser.wait_for(f"{ROWS_JS}.filter(r => {parents!r}.includes(r[1])).length === {len(parents)}",
                               timeout=90)
        for parent in parents:
            before = len(await browser.js(ROWS_JS))
            assert await browser.js(EXPAND_JS.format(run_id=parent)), f"no expand button on parent {parent}"
            await browser.wait_for(f"{ROWS_JS}.length > {before}", timeout=30)
            await asyncio.sleep(1)  # let the table settle (children arrive together)
            seen[parent] = await browser.js(ROWS_JS)
        await browser.screenshot(shot)
    return seen


def _browser_and_store(repo):
    """Chromium (or the system-dependency failure), and the repo's MLflow store and experiment."""
    root, env, _ = repo
    binary = require_chromium()
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return root, env, binary, client, client.get_experiment_by_name("compression-lab")


def test_every_stage_run_is_listed_under_its_pipeline_parent_in_the_ui(repo, tmp_path):
    root, env, binary, client, exp = _browser_and_store(repo)
    runs = client.search_runs([exp.experiment_id], max_results=200)
    parents = sorted((r for r in runs if r.data.tags.get("role") == "pipeline"), key=lambda r: r.info.start_time)
    children = {p.info.run_id: {r.info.run_id: r.data.tags["stage"] for r in runs
                                if r.data.tags.get("mlflow.parentRunId") == p.info.run_id} for p in parents}
    # the fresh pipeline execution: its parent holds one run of every stage (plus any stage
    # dvc.yaml grows later, e.g. search)
    assert set(STAGES) <= set(children[parents[0].info.run_id].values()), children

    proc, url = _start_server(root, env)
    shot = root.parent / "ui" / "runs.png"
    try:
        seen = asyncio.run(_look(binary, url, exp.experiment_id, [p.info.run_id for p in parents],
                                 tmp_path / "chromium", shot))
    finally:
        _stop(proc)

    print(f"\nMLflow UI screenshot: {shot}")
    for parent in parents:
        pid = parent.info.run_id
        rows = [run_id for _, run_id, _ in seen[pid]]
        names = {run_id: name for _, run_id, name in seen[pid]}
        kids = children[pid]
        at = rows.index(pid)
        # directly below the expanded parent: exactly its stage runs, shown by stage name
        assert set(rows[at + 1: at + 1 + len(kids)]) == set(kids), (parent.info.run_name, seen[pid])
        assert {names[k] for k in kids} == set(kids.values())
    assert shot.stat().st_size > 10_000


IMAGE_JS = """(() => [...document.querySelectorAll('img')].filter(i => i.src.includes('/get-artifact?path=pareto.png'))
  .map(i => [i.complete, i.naturalWidth]))()"""


def test_report_summary_shows_its_plot_in_the_artifact_view(repo, tmp_path):
    """The report run's summary.md, opened in the run's Artifacts tab, renders with its image loaded."""
    root, env, binary, client, exp = _browser_and_store(repo)
    report = client.search_runs([exp.experiment_id], "tags.stage = 'report'", order_by=["attributes.start_time"])[0]

    async def look(url: str) -> list:
        async with Browser(binary, tmp_path / "chromium") as browser:
            await browser.open(f"{url}/#/experiments/{exp.experiment_id}/runs/{report.info.run_id}/artifacts/summary.md")
            images = await browser.wait_for(f"{IMAGE_JS}.filter(([done, width]) => done && width > 0).length",
                                            timeout=90)
            await browser.screenshot(root.parent / "ui" / "summary_md.png")
            return images

    proc, url = _start_server(root, env)
    try:
        assert asyncio.run(look(url)) == 1
    finally:
        _stop(proc)
