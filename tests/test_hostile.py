"""Hostile and unlucky input (issue 14), each through what a user runs: a real
``python -m stages.<name>`` process, real files, a real MLflow sqlite store, a real Optuna study.

Every refusal is one stderr line naming the file, key or URL (passwords masked), exit code 2
(130 for Ctrl-C), no traceback, no output file changed, within 60 s and 2 GiB
(:func:`tests.conftest.within_bounds`). The stage processes are forked from one that imported the
library already (:mod:`tests.forked_stage`); Ctrl-C and SIGKILL hit fresh interpreters, and
one test checks that importing the entry points prints nothing.

1. data files never run code (a CIFAR-10 batch whose pickle calls ``os.system``);
2. passwords never show (URL userinfo, ``?password=`` query parameters) in lines, tags or params,
   and the tracking probe reports the real reason;
3. YAML anchor/alias bombs, cycles, deep nesting are refused in milliseconds; random bytes and
   random YAML structures always give one line (hypothesis);
4. no silent wrong result: empty params.yaml, MNIST image/label count mismatch, a search-space
   type that does not fit its key, a search whose every trial fails;
5. one line instead of a traceback: empty checkpoint, checkpoint for other data, non-UTF-8
   params.yaml, out-of-range seed / threads / batch size / widths, a journal folder that cannot
   be made, Ctrl-C;
6. a SIGKILLed search's trial runs are closed on the next start; search outputs are replaced as
   a whole.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.compression.checkpoint import save_model
from pipelines.core.config import ModelConfig, load_params, parse_yaml
from pipelines.core.errors import ParamsError, TrackingError
from pipelines.core.urls import mask_url, redact, secrets
from pipelines.models import CNN, model_spec
from pipelines.search import SearchOutcome, make_storage, summarize, write_outputs
from pipelines.tracking import Run, check_reachable
from tests.conftest import (ROOT, TINY, missing_system_dependency, one_error_line, run_stage, snapshot, stage_env,
                            tiny_project, within_bounds)
from tests.test_data import write_cifar10, write_mnist

SECRET = "hunter2secret"


def _store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _teacher(root: Path, in_channels: int = 1, num_classes: int = 10, name: str = "teacher") -> Path:
    """A real (untrained) checkpoint of TINY's teacher, built for ``in_channels``/``num_classes``."""
    cfg = ModelConfig(**TINY["teacher"])
    model = CNN(in_channels, num_classes, list(cfg.channels), cfg.depth)
    return save_model(root / "models" / f"{name}.pt", model, model_spec(cfg, in_channels, num_classes))


def _refuses(stage: str, root: Path, env: dict[str, str] | None = None, args: list[str] | None = None) -> str:
    """Run ``stage`` in ``root``: one line ``<stage>: error: ...`` within the bounds, nothing under
    ``root`` changed. Returns what follows the prefix."""
    proc = run_stage(stage, root, env if env is not None else stage_env(), args=args)
    line = one_error_line(proc)
    within_bounds(proc)
    assert line.startswith(f"{stage}: error: "), line
    return line.removeprefix(f"{stage}: error: ")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- 1. data files never run code ------------------------------------------------------------

class _Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar_batch_whose_pickle_runs_code_is_refused_and_never_runs(tmp_path):
    root = tiny_project(tmp_path / "p", data={"name": "cifar10", "root": "data"}, tracking={"enabled": False})
    write_cifar10(root / "data")
    marker = tmp_path / "PWNED"
    batch = root / "data" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": _Evil(marker), "labels": [0]}, protocol=2))
    reason = _refuses("train_baseline", root)
    assert not marker.exists(), "the batch file's pickle ran code"
    assert "data/cifar-10-batches-py/data_batch_1" in reason and "system" in reason, reason


def test_honest_cifar_batches_still_load_through_the_restricted_reader(tmp_path):
    from pipelines.core.config import DataConfig
    from pipelines.data import load_data

    arrays = write_cifar10(tmp_path)
    bundle = load_data(DataConfig(name="cifar10", root=str(tmp_path)), seed=0)
    assert bundle.in_channels == 3 and bundle.num_classes == 10
    assert len(bundle.test) == len(arrays["test_y"])


# --- 2. passwords never show --------------------------------------------------------------------

@pytest.mark.parametrize(("url", "masked"), [
    (f"postgresql://u:{SECRET}@db:5432/mlflow", "postgresql://u:***@db:5432/mlflow"),
    (f"postgresql://u@db/x?password={SECRET}&sslmode=require", "postgresql://u@db/x?password=***&sslmode=require"),
    (f"mysql://u@db/x?sslmode=verify&pass={SECRET}", "mysql://u@db/x?sslmode=verify&pass=***"),
    (f"postgresql://u@db/x?PWD={SECRET}", "postgresql://u@db/x?PWD=***"),
    (f"http://u:{SECRET}@tracking:5000", "http://u:***@tracking:5000"),
    (f"postgresql://u:p@ss/{SECRET}@db/x", "postgresql://u:***@db/x"),  # unencoded @ and / in the password
    ("postgresql://optuna@db/optuna", "postgresql://optuna@db/optuna"),
    ("journal:optuna.journal", "journal:optuna.journal"),
    ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db"),
])
def test_every_url_form_is_masked(url, masked):
    assert mask_url(url) == masked
    quoted = f"driver said: cannot connect to {url} (password {' or '.join(secrets(url))})"
    assert SECRET not in redact(quoted, url) and "cannot connect to" in redact(quoted, url)


def test_database_store_that_refuses_stops_the_stage_fast_with_the_password_masked(tmp_path):
    root = tiny_project(tmp_path / "p")
    for uri in (f"postgresql://u:{SECRET}@127.0.0.1:{_closed_port()}/mlflow",
                f"postgresql://u@127.0.0.1:{_closed_port()}/mlflow?password={SECRET}"):
        # within 60 s (MLflow's own ten connection attempts take ~100 s), nothing else on stderr
        reason = _refuses("train_baseline", root, stage_env(MLFLOW_TRACKING_URI=uri))
        assert SECRET not in reason and mask_url(uri) in reason and "Connection refused" in reason, reason


class _Health(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []

    def do_GET(self):  # noqa: N802 - the stdlib's name
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def test_http_userinfo_reaches_a_live_server_with_basic_auth():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_reachable(f"http://u:{SECRET}@127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert _Health.seen == ["Basic " + base64.b64encode(f"u:{SECRET}".encode()).decode()]


def test_http_userinfo_to_a_dead_server_names_the_real_reason_masked():
    uri = f"http://u:{SECRET}@127.0.0.1:{_closed_port()}"
    with pytest.raises(TrackingError) as err:
        check_reachable(uri)
    assert "Connection refused" in str(err.value) and SECRET not in str(err.value)
    assert "http://u:***@127.0.0.1:" in str(err.value)


def test_tags_and_params_carry_urls_masked(mlflow_store):
    client = mlflow.MlflowClient(mlflow_store)
    run_id = client.create_run(client.create_experiment("masking")).info.run_id
    url = f"postgresql://u@db/optuna?password={SECRET}"
    Run(run_id).set_tags({"optuna.storage": url})
    Run(run_id).log_params({"search.storage": url})
    data = client.get_run(run_id).data
    assert data.tags["optuna.storage"] == data.params["search.storage"] == "postgresql://u@db/optuna?password=***"


def test_search_on_postgresql_with_a_query_password_prints_and_tags_it_masked(tmp_path):
    base = os.environ.get("COMPRESSION_TEST_PG_URL")
    if not base:
        missing_system_dependency("$COMPRESSION_TEST_PG_URL is not set: no PostgreSQL server "
                                  '(export COMPRESSION_TEST_PG_URL="$(.ci/postgres)")')
    user, _, password = base.partition("://")[2].partition("@")[0].partition(":")
    url = f"{base.replace(f':{password}@', '@')}?password={password}"
    root = tiny_project(tmp_path / "p", search={"study_name": f"hostile-{os.getpid()}-{time.time_ns()}"})
    _teacher(root)
    store = _store(tmp_path)
    proc = run_stage("search", root, stage_env(MLFLOW_TRACKING_URI=store), args=["--n-trials", "0", "--storage", url])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"password={password}" not in proc.stdout + proc.stderr and "password=***" in proc.stdout
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id],
                              filter_string="tags.stage = 'search'")
    assert runs[0].data.tags["optuna.storage"] == mask_url(url) != url


def test_unreachable_optuna_storage_is_one_line_masked():
    with pytest.raises(ParamsError) as err:
        make_storage(f"postgresql://u@127.0.0.1:{_closed_port()}/optuna?password={SECRET}")
    assert "password=***" in str(err.value) and SECRET not in str(err.value) and "\n" not in str(err.value)


# --- 3. YAML bombs ----------------------------------------------------------------------------------

def _laughs(levels: int = 9, width: int = 9, mapping: bool = False) -> str:
    """Billion laughs as one flow node: item i anchors a node that aliases item i-1 ``width``
    times, so the last of ``levels`` items (``*l<levels-1>``) stands for width**levels values."""
    def node(items: list[str]) -> str:
        return "{" + ", ".join(f"k{j}: {v}" for j, v in enumerate(items)) + "}" if mapping else f"[{', '.join(items)}]"

    return node([f"&l0 {node(['1'] * width)}"] + [f"&l{i} {node([f'*l{i - 1}'] * width)}" for i in range(1, levels)])


def _bomb_params(where: str) -> str:
    """The committed params.yaml with a bomb planted where a reader walks it: a mapping bomb under
    an unknown top-level key or as ``benchmark.inductor`` (both walked key by key), a list bomb as
    ``seed`` or as a search ``choices`` list (both validated and quoted in error messages)."""
    committed = (ROOT / "params.yaml").read_text()
    bomb = _laughs(mapping=where in ("dict", "inductor"))
    old, new = {"dict": ("seed: 0\n", f"seed: 0\nbomb: {bomb}\n"), "seed": ("seed: 0\n", f"seed: {bomb}\n"),
                "inductor": ("inductor: {}", f"inductor: {bomb}"),
                "choices": ("choices: [minmax, histogram]", f"choices: {bomb}")}[where]
    assert old in committed
    return committed.replace(old, new, 1)


@pytest.mark.parametrize("where", ["dict", "seed", "inductor", "choices"])
def test_alias_bomb_in_params_is_refused_in_seconds(tmp_path, where):
    root = tmp_path / "p"
    root.mkdir()
    (root / "params.yaml").write_text(_bomb_params(where))
    (root / "models").mkdir()
    (root / "models" / "pruned.pt").write_bytes(b"previous input")
    reason = _refuses("quantize", root)
    assert reason.startswith("params.yaml: refused: its aliases expand to more than"), reason


@pytest.mark.parametrize(("text", "expected"), [
    ("a: &a [*a]\n", "line 1: an alias refers to its own anchor"),
    ("seed: " + "[" * 80 + "]" * 80 + "\n", "nested deeper than"),
    ("seed: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    ("seed: 0\nseed: 1\n", "line 2 is not valid YAML (duplicate key 'seed')"),
    ("seed: \x00\n", "character #x0000 at offset 6"),
    ("train: {epochs: 2001-13-01}\n", "is not valid YAML (month must be in 1..12)"),
    ("!!python/object/apply:os.system [ls]\n", "could not determine a constructor"),
    ("a: 1\n---\nb: 2\n", "line 2 is not valid YAML (but found another document)"),
])
def test_loader_refuses_structures_that_would_hang_or_crash_a_reader(text, expected):
    started = time.perf_counter()
    with pytest.raises(ParamsError) as err:
        parse_yaml(text, "params.yaml")
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert time.perf_counter() - started < 5


def test_oversized_params_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\n" + "#" * (2 << 20))
    with pytest.raises(ParamsError, match=r"params.yaml: \d+ bytes, more than the 1048576"):
        load_params(path)


def test_anchors_that_stay_small_are_still_allowed(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("teacher: &net {channels: [16, 32], depth: 1}\nstudent: *net\n"
                    "train: {epochs: 2}\ndistill:\n  <<: {epochs: 3, lr: 0.01}\n  lr: 0.02\n")
    params = load_params(path)
    assert params.student.channels == params.teacher.channels == [16, 32]
    assert (params.distill.epochs, params.distill.lr) == (3, 0.02)  # a merge key may be overridden


def _assert_one_line_or_valid(path: Path) -> None:
    try:
        load_params(path)
    except ParamsError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc) and len(str(exc)) < 800, str(exc)


# characters YAML takes as they are (no control characters, no surrogates): strings reach the schema
words = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=8)
scalars = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.floats(), st.booleans(), st.none(), words,
                    st.sampled_from(["digits", "channel", "static", "eager", "~", "<<"]))
keys = st.one_of(st.sampled_from(["seed", "data", "train", "prune", "search", "space", "benchmark", "inductor",
                                  "choices", "channels", "epochs", "<<"]), words)


def _key(key: str) -> str:
    return key if key == "<<" else json.dumps(key, ensure_ascii=False)  # << unquoted: a merge key


@st.composite
def yaml_with_anchors(draw) -> str:
    """Random YAML text: nested flow mappings/sequences that may carry anchors, later nodes
    aliasing any earlier anchor (merges and alias chains occur), sometimes after a billion-laughs
    block of random size whose last anchor some section then uses."""
    anchors: list[str] = []
    prefix = ""
    if draw(st.booleans()):
        levels = draw(st.integers(2, 9))
        prefix = f"bomb: {_laughs(levels, draw(st.integers(2, 9)), mapping=draw(st.booleans()))}\n"
        anchors.append(f"l{levels - 1}")

    def node(depth: int) -> str:
        choice = draw(st.integers(0, 4 if depth < 3 else 1))
        if choice == 0 or (choice == 1 and not anchors):
            return json.dumps(draw(scalars), ensure_ascii=False)
        if choice == 1:
            return "*" + draw(st.sampled_from(anchors))
        if choice == 2:
            body = "[" + ", ".join(node(depth + 1) for _ in range(draw(st.integers(0, 7)))) + "]"
        else:
            names = draw(st.lists(keys, max_size=7, unique=True))
            body = "{" + ", ".join(f"{_key(name)}: {node(depth + 1)}" for name in names) + "}"
        if draw(st.booleans()):
            anchors.append(f"a{len(anchors)}")
            return f"&{anchors[-1]} {body}"
        return body

    names = draw(st.lists(keys.filter(lambda k: k != "bomb"), min_size=1, max_size=8, unique=True))
    return prefix + "".join(f"{_key(name)}: {node(0)}\n" for name in names)


FUZZ = settings(max_examples=150, deadline=5000, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_give_one_line_in_time(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "params.yaml"
    path.write_bytes(data)
    _assert_one_line_or_valid(path)


@FUZZ
@given(yaml_with_anchors())
def test_random_yaml_with_anchors_gives_one_line_in_time(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "params.yaml"
    path.write_text(text)
    _assert_one_line_or_valid(path)


@settings(max_examples=3, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(min_size=1, max_size=200), yaml_with_anchors().map(str.encode)))
def test_random_params_file_through_a_stage_process(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("stage")
    (root / "params.yaml").write_bytes(data)
    store = _store(tmp_path_factory.mktemp("store"))  # outside root: were the file valid, distill stops at
    _refuses("distill", root, stage_env(MLFLOW_TRACKING_URI=store))  # the missing teacher


# --- 4. no silent wrong results -----------------------------------------------------------------

def test_empty_params_file_is_refused_and_the_model_kept(tmp_path):
    root = tmp_path / "p"
    (root / "models").mkdir(parents=True)
    _teacher(root)
    (root / "models" / "student.pt").write_bytes(b"previous student")
    for text in ("", "# all commented out\n", "{}\n"):
        (root / "params.yaml").write_text(text)
        reason = _refuses("distill", root)
        assert reason.startswith("params.yaml: no sections; "), reason


def _drop_labels(path: Path, keep: int) -> None:
    """Cut an IDX label file (magic, count, one byte per label) to its first ``keep`` labels."""
    data = path.read_bytes()
    path.write_bytes(data[:4] + struct.pack(">I", keep) + data[8:8 + keep])


def test_mnist_with_fewer_labels_than_images_is_refused(tmp_path):
    root = tiny_project(tmp_path / "p", data={"name": "mnist", "root": "data"}, tracking={"enabled": False})
    arrays = write_mnist(root / "data", "MNIST")
    n = len(arrays["train_y"])
    _drop_labels(root / "data" / "MNIST" / "raw" / "train-labels-idx1-ubyte", n - 5)
    reason = _refuses("train_baseline", root)
    assert f"{n} images but {n - 5} labels in the train split" in reason, reason
    assert "MNIST/raw/train-labels-idx1-ubyte" in reason


def test_search_space_type_that_does_not_fit_its_key_is_refused_before_any_trial(tmp_path):
    root = tiny_project(tmp_path / "p", search={"space": {"prune.steps": {"type": "float", "low": 1, "high": 3}}})
    _teacher(root)
    reason = _refuses("search", root, stage_env(MLFLOW_TRACKING_URI=_store(tmp_path)))
    assert reason == ("search.space.prune.steps: type float does not fit prune.steps, which takes a whole number; "
                      "use type: int or categorical"), reason


def test_search_whose_every_trial_fails_exits_2_and_keeps_the_previous_outputs(tmp_path):
    # the loss becomes NaN at every learning rate of the space, the current one (its first trial) included
    root = tiny_project(tmp_path / "p", distill={"lr": 1e30}, search={
        "n_trials": 2, "space": {"distill.lr": {"type": "float", "low": 1e29, "high": 1e31, "log": True}}})
    _teacher(root)
    out = root / "reports" / "search"
    out.mkdir(parents=True)
    (out / "best_params.yaml").write_text("prune.amount: 0.3\n")
    (out / "pareto.json").write_text("{}\n")
    before = snapshot(out)
    proc = run_stage("search", root, stage_env(MLFLOW_TRACKING_URI=_store(tmp_path)))
    line = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert line.startswith("search: error: all 2 trials failed (first: ") and "loss became nan" in line, line
    assert snapshot(out) == before


# --- 5. one line instead of a traceback --------------------------------------------------------

def test_zero_byte_checkpoint_is_one_line(tmp_path):
    root = tiny_project(tmp_path / "p", tracking={"enabled": False})
    (root / "models").mkdir()
    (root / "models" / "teacher.pt").write_bytes(b"")
    reason = _refuses("distill", root)
    assert reason.startswith("models/teacher.pt: not a readable checkpoint"), reason


@pytest.mark.parametrize(("stage", "model"), [("distill", "teacher"), ("search", "teacher"),
                                              ("compile_benchmark", "teacher"), ("prune", "student"),
                                              ("quantize", "pruned")])
def test_checkpoint_built_for_other_data_is_one_line(tmp_path, stage, model):
    root = tiny_project(tmp_path / "p", tracking={"enabled": False})
    for name in ("teacher", "student", "pruned", "quantized"):
        _teacher(root, *((3, 7) if name == model else (1, 10)), name=name)
    reason = _refuses(stage, root)
    assert reason.startswith(f"models/{model}.pt: built for 3 input channels and 7 classes, but data.name=digits "
                             "has 1 and 10"), reason


STAGE_MODULES = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")


def test_every_stage_entry_point_imports_without_a_word():
    """The refusals above run in children of a process that imported the library already
    (tests/forked_stage.py), so what importing prints is checked here, in a fresh interpreter that
    imports every entry point as `python -m` would: nothing on stdout or stderr."""
    assert {"train_baseline", "distill", "prune", "quantize", "compile_benchmark", "search", "report",
            "promote"} <= set(STAGE_MODULES)
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module('stages.' + name)\n"
    proc = subprocess.run([sys.executable, "-c", code, *STAGE_MODULES], cwd=ROOT, env=stage_env(),
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_non_utf8_params_is_one_line(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes().replace(b"digits ", b"d\xefgits "))
    reason = _refuses("train_baseline", root)
    assert reason.startswith("params.yaml: not UTF-8 text (byte 0xef at offset"), reason


@pytest.mark.parametrize(("section", "values", "key", "why"), [
    (None, {"seed": 4294967296}, "seed", "32-bit seeds"),
    ("benchmark", {"num_threads": 10**12}, "benchmark.num_threads", "cores this process may use"),
    ("benchmark", {"batch_size": 10**9}, "benchmark.batch_size", "held in memory"),
    ("data", {"batch_size": 10**9}, "data.batch_size", "held in memory"),
    ("teacher", {"channels": [10**9]}, "teacher.channels.0", "38M weights"),
    ("train", {"epochs": 10**9}, "train.epochs", "days of CPU time"),
])
def test_numbers_that_size_memory_threads_or_time_are_bounded_before_the_run_opens(tmp_path, section, values,
                                                                                    key, why):
    root = tiny_project(tmp_path / "p")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    (raw[section] if section else raw).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    reason = _refuses("train_baseline", root, stage_env(MLFLOW_TRACKING_URI=_store(tmp_path)))
    assert reason.startswith(f"{key}: Input should be less than or equal to") and why in reason, reason
    assert not (tmp_path / "mlflow.db").exists()  # refused before the MLflow run (or its store) was opened


def test_journal_storage_whose_folder_cannot_be_made_is_one_line(tmp_path):
    root = tiny_project(tmp_path / "p", tracking={"enabled": False})
    _teacher(root)
    (root / "blocker").write_text("a file where the journal's folder should be")
    reason = _refuses("search", root, args=["--storage", "journal:blocker/studies/x.journal"])
    assert reason.startswith("search.storage: cannot use the journal file") and "blocker/studies" in reason, reason


def _runs(store: str, experiment: str = "faults", **tags: str) -> list:
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items()) or None
    return client.search_runs([exp.experiment_id], filter_string=where or "")


def _wait_for_run(proc: subprocess.Popen, store: str, timeout: float = 120, **tags: str) -> None:
    deadline = time.monotonic() + timeout
    while not [r for r in _runs(store, **tags) if r.info.status == "RUNNING"]:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no RUNNING run with {tags} (exit {proc.poll()}): {proc.stderr.read()[-3000:]}")
        time.sleep(0.5)


def test_ctrl_c_during_a_stage_is_one_line_exit_130_and_the_run_killed(tmp_path):
    root = tiny_project(tmp_path / "p", train={"epochs": 1000})  # the schema's most: still training after 2 s
    store = _store(tmp_path)
    mlflow.MlflowClient(store).create_experiment("faults")  # made here: the test reads it while the stage writes
    env = stage_env(MLFLOW_TRACKING_URI=store, TQDM_DISABLE="1")
    # SIGINT back to its default in the stage: a shell starts background jobs (`make test &`) with
    # SIGINT ignored, children inherit that, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, "-m", "stages.train_baseline"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_run(proc, store, stage="train_baseline")
    time.sleep(2)  # inside the training loop
    assert proc.poll() is None, "the stage ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    line = one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), code=130)
    assert line.startswith("train_baseline: interrupted; outputs already written are complete"), line
    assert [r.info.status for r in _runs(store, stage="train_baseline")] == ["KILLED"]
    assert not (root / "models").exists()


# --- 6. killed searches and stale outputs ----------------------------------------------------------

def test_sigkilled_search_has_its_trial_runs_closed_on_the_next_start(tmp_path):
    root = tiny_project(tmp_path / "p", distill={"epochs": 1000})
    _teacher(root)
    store = _store(tmp_path)
    mlflow.MlflowClient(store).create_experiment("faults")
    env = stage_env(MLFLOW_TRACKING_URI=store)
    proc = subprocess.Popen([sys.executable, "-m", "stages.search"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_run(proc, store, timeout=180, **{"optuna.trial": "0"})
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert [r.info.status for r in _runs(store, **{"optuna.trial": "0"})] == ["RUNNING"]

    again = run_stage("search", root, env, args=["--n-trials", "0"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r.info.status for r in _runs(store, **{"optuna.trial": "0"})] == ["KILLED"]
    assert sorted(r.info.status for r in _runs(store, stage="search")) == ["FINISHED", "KILLED"]


def test_search_outputs_are_replaced_as_a_whole_and_promote_then_refuses(tmp_path):
    out = tmp_path / "reports" / "search"
    out.mkdir(parents=True)
    for stale in ("best_params.yaml", "param_importances.png", "param_importances.html", "pareto.json"):
        (out / stale).write_text("from an earlier search\n")
    study = optuna.create_study(directions=["maximize", "minimize"])  # no feasible trial this time
    outcome: SearchOutcome = summarize(study, None)
    files = write_outputs(outcome, out, ["val_accuracy", "latency_ms_p50"])
    assert sorted(p.name for p in out.iterdir()) == ["pareto.json"] == [p.name for p in files]
    assert [p.name for p in tmp_path.joinpath("reports").iterdir()] == ["search"]  # no staging folder left
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    proc = run_stage("promote", tmp_path, timeout=60)
    assert one_error_line(proc).startswith("promote: error: reports/search/best_params.yaml: not found")
