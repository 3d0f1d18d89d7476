"""Retrain from the Prefect UI: real server, process work pool + worker, headless Chromium.

Deploys `retrain-nightly` from deployments/prefect.yaml (its parameters pointed at a tiny
generated catalog served by the mirror), checks its cron schedule is registered, then in
the browser opens the deployment's page, starts a custom run with a changed parameter
(a fresh data root) and waits for the worker to finish it: the run completes and a new
version appears in the registry. Server, worker and browser are stopped even on failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_helpers import CHROMIUM, CHROMIUM_ARGS
from tests.flow_helpers import tiny_config_data
from tests.prefect_server_helpers import (
    REPO,
    api,
    prefect_cli,
    running_prefect_server,
    running_process_worker,
    stop,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN_S = 240


@pytest.fixture
def fresh_prefect_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh `prefect server start` per test (this module's tests each read its runs)."""
    with running_prefect_server(tmp_path) as server:
        yield server


@pytest.fixture
def worker(fresh_prefect_server: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[None]:
    """A process work pool `cpu` and one worker polling it."""
    with running_process_worker(fresh_prefect_server[1], tmp_path / "worker.log"):
        yield


def _wait_for_run(url: str, deployment_id: str, data_root: str) -> dict[str, Any]:
    """The flow run of this deployment whose config uses `data_root`, once it is final."""
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        runs = api(f"{url}/api/flow_runs/filter", {
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"not_any_": ["SCHEDULED"]}}}})
        mine = [r for r in runs
                if r["parameters"]["config"].get("storage", {}).get("data_root") == data_root]
        if mine and mine[0]["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return mine[0]
        time.sleep(2)
    raise AssertionError(f"no finished flow run with data_root {data_root} in {RUN_S} s")


def test_custom_run_from_the_ui_registers_a_new_version(fresh_prefect_server, worker, served_demo,
                                                        standin_backbone, tmp_path):
    from playwright.sync_api import sync_playwright

    url, env = fresh_prefect_server
    registry = tmp_path / "registry"
    config = tiny_config_data(served_demo.csv_path, tmp_path / "data-deployed", standin_backbone)
    config["registry"]["root"] = str(registry)
    prefect_cli("--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name",
             "retrain-nightly", "--params", json.dumps({"config": config}), env=env)

    deployment = api(f"{url}/api/deployments/name/retrain/retrain-nightly")
    assert [(s["schedule"]["cron"], s["active"]) for s in deployment["schedules"]] == [
        ("0 3 * * *", True)]
    new_root = str(tmp_path / "data-from-ui")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/deployments/deployment/{deployment['id']}")
            page.get_by_text("At 03:00 AM every day").wait_for()  # the nightly schedule
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").click()
            data_root = page.locator(  # the textarea of the form property labelled Data Root
                "xpath=//span[normalize-space()='Data Root (Optional)']"
                "/ancestor::div[contains(concat(' ', @class, ' '), ' schema-form-property ')][1]"
                "//textarea")
            assert data_root.input_value() == str(tmp_path / "data-deployed")
            data_root.fill(new_root)
            page.get_by_role("button", name="Submit").click()
            run = _wait_for_run(url, deployment["id"], new_root)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    assert run["state"]["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
    assert run["parameters"]["config"]["catalog_csv"] == served_demo.csv_path
    assert sorted(p.name for p in registry.glob("posterflow/[0-9]*")) == ["1"]
    assert list(Path(new_root).glob("runs/*/model/saved_model.pb"))


def _paused_run(url: str, flow_name: str) -> dict[str, Any]:
    """The first PAUSED run of `flow_name`, once there is one."""
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        runs = api(f"{url}/api/flow_runs/filter", {
            "flows": {"name": {"any_": [flow_name]}},
            "flow_runs": {"state": {"name": {"any_": ["Paused"]}}}})
        if runs:
            return runs[0]
        time.sleep(2)
    raise AssertionError(f"no paused {flow_name} run within {RUN_S} s")


def _assert_opens_offline_with_every_image(browser: Any, card: Path) -> None:
    """Open the card from disk with the network cut: it renders, every image decodes, and
    the page asks for nothing but its own file."""
    context = browser.new_context(offline=True)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(card.as_uri())
    page.wait_for_load_state("load")
    images = page.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth)")
    assert len(images) >= 4 and all(images), images  # figures + best and worst posters
    assert page.get_by_text("Worst-predicted test posters").is_visible()
    assert requests == [card.as_uri()], requests  # data: URIs are not requests
    context.close()


def _assert_links_resolve(browser: Any, page: Any, scope: str) -> int:
    """Follow every link inside `scope` on the page as a reviewer would: none is `file://`
    (a browser blocks it from an http page) and none ends on the UI's 404 page."""
    hrefs = page.locator(f"{scope} a[href]").evaluate_all("links => links.map(a => a.href)")
    for href in hrefs:
        assert not href.startswith("file:"), f"{href}: blocked from an http page"
        other = browser.new_page()
        response = other.goto(href)
        other.wait_for_load_state("networkidle")
        assert response is not None and response.ok, f"{href}: {response and response.status}"
        assert "Page Not Found" not in other.title(), f"{href}: the UI's 404 page"
        other.close()
    return len(hrefs)


def _assert_report_readable_in_the_ui(browser: Any, page: Any, url: str, run_id: str) -> None:
    """The paused run's Artifacts tab lists the model report; it opens in the UI with the
    card's tables and every figure decoded, and its links resolve."""
    page.goto(f"{url}/runs/flow-run/{run_id}")
    page.get_by_text("Artifacts", exact=True).first.click()  # the run page's tab
    page.get_by_text("model-report").first.click()
    page.wait_for_url("**/artifacts/**")
    page.get_by_role("heading", name="posterflow v1 (awaiting approval)").wait_for()
    page.get_by_text("macro F1 @0.5, 95% CI").wait_for()
    page.get_by_text("all guardrails passed").wait_for()  # the tiny config turns them off
    page.wait_for_load_state("networkidle")
    images = page.evaluate("Array.from(document.images).filter(i => i.src.startsWith('data:'))"
                           ".map(i => i.complete && i.naturalWidth)")
    assert len(images) >= 3 and all(images), images  # learning curves, per-genre F1, histograms
    assert _assert_links_resolve(browser, page, "body") >= 3  # the report's run, task, key


def test_approval_in_the_ui_promotes_and_emits_the_event(fresh_prefect_server, served_demo,
                                                         standin_backbone, tmp_path):
    """`registry.approval: required`: the run pauses; Resume > approve > Submit in the UI
    makes the version champion; the event is on the server; the card opens offline. While
    the run waits, its report (tables and figures) is readable in the UI, and no link the
    reviewer sees is blocked or a 404."""
    import yaml
    from playwright.sync_api import sync_playwright

    url, env = fresh_prefect_server
    config = tiny_config_data(served_demo.csv_path, tmp_path / "data", standin_backbone)
    config["registry"].update(root=str(tmp_path / "reg"), approval="required",
                              approval_timeout_s=RUN_S)
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 (closed below)
    run = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(tmp_path / "retrain.yaml"),
         "--json"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=log,
        start_new_session=True)
    try:
        paused = _paused_run(url, "train")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                _assert_report_readable_in_the_ui(browser, page, url, paused["id"])
                page.goto(f"{url}/runs/flow-run/{paused['id']}")
                page.get_by_role("button", name="Resume").click()
                dialog = page  # the Resume Flow Run modal is all the page's forms now
                dialog.get_by_text("macro F1 @0.5").first.wait_for()  # the card's headline
                dialog.get_by_text("awaiting approval").first.wait_for()
                _assert_links_resolve(browser, page, "[role=dialog]")

                def field(title: str) -> Any:
                    return dialog.locator(
                        f"xpath=.//span[starts-with(normalize-space(), '{title}')]/ancestor::div"
                        "[contains(concat(' ', @class, ' '), ' schema-form-property ')][1]")

                approve = field("Approve").locator("input[type=checkbox]")
                approve.evaluate("toggle => toggle.click()")  # the input hides behind its knob
                assert approve.is_checked()
                field("Reason").locator("textarea, input").first.fill("approved in the UI")
                dialog.get_by_role("button", name="Submit").click()
                stdout, _ = run.communicate(timeout=RUN_S)
                _assert_opens_offline_with_every_image(
                    browser, tmp_path / "reg/posterflow/cards/1.html")
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                raise
            finally:
                browser.close()
    finally:
        stop(run)
        log.close()

    assert run.returncode == 0, (tmp_path / "run.log").read_text()[-4000:]
    summary = json.loads(stdout)
    assert (summary["version"], summary["alias"]) == (1, "champion")
    aliases = json.loads((tmp_path / "reg/posterflow/aliases.json").read_text())
    assert aliases["aliases"] == {"champion": 1}
    assert aliases["history"][-2]["reason"].startswith("approved (approved in the UI); ")
    deadline = time.monotonic() + 30
    while True:
        events = api(f"{url}/api/events/filter", {
            "filter": {"event": {"name": ["posterflow.model.promoted"]}}})["events"]
        if events or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [e["resource"]["posterflow.version"] for e in events] == ["1"]
    assert events[0]["payload"]["reason"].startswith("approved (approved in the UI)")
