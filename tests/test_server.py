"""A real `mlflow server` on 127.0.0.1: runs logged over HTTP, checked through the REST API,
and the printed compare link opened in real Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from projects import BIN, ROOT, cli_env, run_cli

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`losslab server` with the local config (conf/mlflow_server/local.yaml) on a temp store."""
    store = tmp_path_factory.mktemp("server")
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "losslab"), "server", f"mlflow_server.port={port}",
         f"mlflow_server.backend_store_uri=sqlite:///{store}/mlflow.db",
         f"mlflow_server.artifacts_destination={store / 'artifacts'}"],
        env=cli_env(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not come up")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _api(url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def logged(server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    from projects import copy_project

    proj = copy_project(tmp_path_factory.mktemp("srv") / "proj")
    assert run_cli(proj, "prepare", "scenario=linear").returncode == 0
    r = run_cli(proj, "run", "scenario=linear", "tracking=server", f"tracking.uri={server}", "seeds=[0,1]")
    assert r.returncode == 0, r.stderr
    link = next(
        line.split(": ", 1)[1] for line in r.stdout.splitlines() if line.startswith("compare linear runs")
    )
    chart = next(
        line.split(": ", 1)[1] for line in r.stdout.splitlines() if line.startswith("loss of every linear")
    )
    return server, link, chart


def test_runs_arrive_over_http(logged: tuple[str, str, str]) -> None:
    url, link, _ = logged
    exp = _api(url, "experiments/get-by-name?experiment_name=linear")["experiment"]
    runs = _api(url, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    assert len(runs) == 5 * (1 + 2)
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    parents = [t for t in tags if "mlflow.parentRunId" not in t]
    assert sorted(t["variant"] for t in parents) == [
        "adam",
        "broken",
        "sgd_small_lr",
        "standardized",
        "ten_points",
    ]
    assert link.startswith(f"{url}/#/compare-runs?runs=")


def test_no_secret_from_the_environment_is_logged(server: str, prepared: Path, tmp_path: Path) -> None:
    """Credentials in MLFLOW_TRACKING_URI and other secrets in the environment reach no param,
    tag, metric name or artifact, and are not printed."""
    from projects import copy_project

    secrets = ("uri-pass-5c1d", "bearer-tok-77aa", "aws-secret-0b3e")
    proj = copy_project(tmp_path / "proj")
    shutil.copytree(prepared / "data", proj / "data", dirs_exist_ok=True)
    env = {
        "MLFLOW_TRACKING_URI": server.replace("http://", f"http://alice:{secrets[0]}@"),
        "MLFLOW_TRACKING_TOKEN": secrets[1],
        "AWS_SECRET_ACCESS_KEY": secrets[2],
    }
    r = run_cli(proj, "run", "scenario=linear", "variant=broken", "tracking=team", "seeds=[0]", **env)
    assert r.returncode == 0, r.stderr
    printed = [line for line in (r.stdout + r.stderr).splitlines() if any(s in line for s in secrets)]
    assert not printed

    exp = _api(server, "experiments/get-by-name?experiment_name=linear")["experiment"]
    body = {"experiment_ids": [exp["experiment_id"]], "max_results": 1000}
    runs = _api(server, "runs/search", body)["runs"]
    assert runs
    for run in runs:
        data = run["data"]
        text = json.dumps([data.get("params"), data.get("tags"), [m["key"] for m in data.get("metrics", [])]])
        assert not any(s in text for s in secrets)
        run_id = run["info"]["run_id"]
        todo = [""]
        while todo:
            listing = _api(server, f"artifacts/list?run_id={run_id}&path={todo.pop()}")
            for f in listing.get("files", []):
                if f["is_dir"]:
                    todo.append(f["path"])
                    continue
                q = urllib.parse.urlencode({"path": f["path"], "run_uuid": run_id})
                with urllib.request.urlopen(f"{server}/get-artifact?{q}", timeout=10) as resp:
                    body = resp.read()
                assert not any(s.encode() in body for s in secrets), f["path"]


def test_unreachable_server_fails_before_training(prepared: Path) -> None:
    r = run_cli(
        prepared, "run", "scenario=linear", "tracking=server", f"tracking.uri=http://127.0.0.1:{_free_port()}"
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "unreachable" in r.stderr


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (.ci/run installs it)")
def test_compare_view_in_a_real_browser(logged: tuple[str, str, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    _, link, _ = logged
    run_ids = json.loads(urllib.request.unquote(link.split("runs=")[1].split("&")[0]))
    broken_and_fix = run_ids[:2]  # broken first, then the first fix
    compare = link.split("#")[0] + "#/compare-runs?runs=" + urllib.request.quote(json.dumps(broken_and_fix))
    compare += "&experiments=" + link.split("experiments=")[1]
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.goto(compare)
        page.wait_for_selector("text=Comparing 2 Runs", timeout=90_000)
        wanted = ("broken", "adam", "variant", "role", "loss")
        deadline = time.time() + 60  # sections render one after another: wait for what we check
        while not all(w in (body := page.inner_text("body")) for w in wanted) and time.time() < deadline:
            page.wait_for_timeout(500)
        shot = tmp_path / "compare.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert "broken" in body and "adam" in body  # both runs
    assert "variant" in body and "role" in body  # their tags
    assert "loss" in body  # the loss metric
    assert shot.stat().st_size > 10_000
    if os.environ.get("LOSSLAB_SCREENSHOTS"):  # keep the picture, e.g. as a CI artifact
        shutil.copy(shot, Path(os.environ["LOSSLAB_SCREENSHOTS"]) / "compare.png")


def _number(text: str) -> float | None:
    try:
        return float(text.replace("\u2212", "-").replace(",", ""))
    except ValueError:
        return None


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (.ci/run installs it)")
def test_the_printed_loss_link_draws_every_variant_on_a_log_axis(
    logged: tuple[str, str, str], tmp_path: Path
) -> None:
    """The first link `losslab run` prints opens, with no clicks, one chart with the loss of the
    broken original and of every fix, one line per variant, on a log y axis."""
    from playwright.sync_api import sync_playwright

    _, _, chart = logged
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(chart)
        deadline = time.time() + 90
        while page.locator("path.js-line").count() < 5 and time.time() < deadline:
            page.wait_for_timeout(500)
        lines = page.locator("path.js-line").count()
        ticks = page.locator(".ytick text").all_text_contents()  # SVG: no innerText
        body = page.inner_text("body")
        shot = tmp_path / "loss_chart.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert lines >= 5, f"{lines} lines drawn"  # broken, adam, sgd_small_lr, standardized, ten_points
    assert all(v in body for v in ("broken", "adam", "sgd_small_lr", "standardized", "ten_points"))
    values = sorted(v for v in map(_number, ticks) if v is not None and v > 0)
    # A log axis: its ticks are decades apart (1, 1e8, 1e16 ...); a linear one steps evenly.
    assert len(values) >= 3 and all(b / a >= 10 for a, b in itertools.pairwise(values)), ticks
    assert shot.stat().st_size > 10_000
    if os.environ.get("LOSSLAB_SCREENSHOTS"):
        shutil.copy(shot, Path(os.environ["LOSSLAB_SCREENSHOTS"]) / "loss_chart.png")
