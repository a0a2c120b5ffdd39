"""The forked stage runner (tests/forked_stage.py) shows what a fresh `python -m stages.<name>`
shows: the same exit status, stdout and stderr (a traceback included), so the tests that read
"one line, exit 2, no traceback" through it could fail."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import run_stage, stage_env, start_stage

STAGES = {
    "speaks": "import sys\nprint('on stdout')\nprint('on stderr', file=sys.stderr)\n",
    "crashes": "import sys\nprint('before', file=sys.stderr)\nraise RuntimeError('kaput')\n",
    "exits": "import atexit, sys\natexit.register(lambda: print('atexit ran', file=sys.stderr))\nraise SystemExit(3)\n",
}


@pytest.fixture
def project(tmp_path):
    """A project whose `stages` package holds three tiny entry points (the project root comes
    first on sys.path, as with `python -m`)."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    for name, code in STAGES.items():
        (tmp_path / "stages" / f"{name}.py").write_text(code)
    return tmp_path


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_forked_stage_ends_as_a_fresh_interpreter_does(project, name):
    forked = run_stage(name, project, stage_env(), timeout=120)
    real = run_stage(name, project, stage_env(), timeout=120, real=True)
    assert (forked.returncode, forked.stdout) == (real.returncode, real.stdout)
    # a traceback names the file it ran: the same lines, file paths aside
    strip = lambda text: [line for line in text.splitlines() if not line.lstrip().startswith("File ")]  # noqa: E731
    assert strip(forked.stderr) == strip(real.stderr), (forked.stderr, real.stderr)
    assert {"speaks": 0, "crashes": 1, "exits": 3}[name] == forked.returncode
    if name == "crashes":
        assert "Traceback" in forked.stderr and forked.stderr.rstrip().endswith("RuntimeError: kaput")
    if name == "exits":
        assert "atexit ran" in forked.stderr
    assert forked.peak_rss_mib > 0 and forked.wall_s < 60


def test_a_started_stage_is_a_process_of_its_own(project, tmp_path):
    (project / "stages" / "waits.py").write_text("import time\nprint('waiting', flush=True)\ntime.sleep(600)\n")
    proc = start_stage("waits", project, stage_env(), [], tmp_path / "waits.log")
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL == proc.returncode
