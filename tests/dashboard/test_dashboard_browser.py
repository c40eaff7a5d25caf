"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real analysis
server process (embedded Redis) and a real edge agent process streaming a clip of the sample faces.

The walk: sign in, watch the agent's faces arrive on the live view (server-sent events, no
reload), open a face, verify it (the enhancement layer comes from the edge agent on demand), read
the bytes per layer and the audit trail, then enrol the face as an identity, rename it and
delete it in the gallery. A screenshot of the verified face lands in the test's tmp dir; set
``DASHBOARD_SCREENSHOT=deploy/screenshots/dashboard.png`` to also write it there.

Playwright's own browser download does not work on these machines: Chromium comes from Debian
(``make test`` installs it). Without it this test fails, it does not skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bench.fleet import free_port, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "browser-test-key-0001"
TOKEN = "browser-test-camera-token"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
PEOPLE = ["Sophia_Loren", "Kurt_Warner", "Ashanti"]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Chromium is not installed: `make test` installs Debian's chromium (or run "
                    "`apt-get install chromium`; set CHROMIUM to use another binary)", pytrace=False)
    return path




def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "FACESERVER_", "REDIS_URL"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    return env


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """A real server process; the agent is started by the test (so the browser sees its faces arrive)."""
    from demo.clip import make_clip

    folder = tmp_path_factory.mktemp("browser")
    clip = make_clip(folder / "door.avi", PEOPLE, seconds_each=2.0, gap_s=1.0)
    http, grpc = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "analysis_server", "--http-port", str(http), "--grpc-port", str(grpc),
         "--data-dir", str(folder / "server")], cwd=ROOT, stdout=open(folder / "server.log", "w"),
        stderr=subprocess.STDOUT,
        env=_env(FACESERVER_API_KEYS=API_KEY, FACESERVER_CAMERA_TOKENS=json.dumps({"*": TOKEN})))
    state = {"folder": folder, "clip": clip, "http": http, "grpc": grpc, "agent": None}

    def ready() -> bool:
        assert server.poll() is None, (folder / "server.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, 120, "the analysis server")
        yield state
    finally:
        _stop(state["agent"])
        _stop(server)


def start_agent(system: dict) -> subprocess.Popen:
    folder = system["folder"]
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "--server", f"127.0.0.1:{system['grpc']}", "--data-dir",
         str(folder / "edge"), "--source", str(system["clip"]), "--camera-id", "front-door", "--sample-fps", "4",
         "--interval", "60"], cwd=ROOT, stdout=open(folder / "edge.log", "w"), stderr=subprocess.STDOUT,
        env=_env(EDGE_TOKEN=TOKEN, EDGE_TRACKING__TTL_S="0.5", EDGE_STATUS_INTERVAL_S="1"))
    system["agent"] = agent
    return agent


@pytest.fixture(scope="module")
def browser():
    import tempfile

    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(profile, executable_path=executable, headless=True,
                                                       args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 860})
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


def test_operator_watches_faces_arrive_and_verifies_one_end_to_end(system, browser, tmp_path):
    from playwright.sync_api import expect

    from analysis_server.face_images import reconstruction_installed

    base = f"http://127.0.0.1:{system['http']}"
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # Not signed in: the login form, then back to the live view.
    page.goto(base + "/ui")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("input[name=api_key]", "wrong-key-123")
    page.click("button[type=submit]")
    expect(page.locator(".alert-error")).to_contain_text("not valid")
    page.fill("input[name=api_key]", API_KEY)
    page.click("button[type=submit]")
    expect(page.locator("#live-state")).to_have_text("live")
    expect(page.locator("#no-cameras")).to_be_visible()

    # The agent starts now: its faces arrive over SSE, without a reload.
    agent = start_agent(system)
    cards = page.locator('.camera[data-camera-id="front-door"] .face-card')
    try:
        expect(cards.first).to_be_visible(timeout=120_000)
    except AssertionError:
        raise AssertionError("no face arrived; agent log:\n" + (system["folder"] / "edge.log").read_text()[-3000:])
    assert agent.poll() is None
    wait_until(lambda: cards.count() >= 2, 60, "a second face on the live view")
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # same page, no reload
    page.screenshot(path=str(tmp_path / "live.png"))

    # One face: the base layer at once, then verify.
    cards.first.click()
    expect(page.locator("h2", has_text="Full fidelity")).to_be_visible()
    base_bytes = int(page.locator(".face-page").get_attribute("data-base-bytes"))
    assert 20 <= base_bytes <= 80
    expect(page.locator("#base-bytes")).to_have_text(f"{base_bytes} B")
    if reconstruction_installed():
        expect(page.locator("#base-image")).to_be_visible()
        assert page.eval_on_selector("#base-image", "i => i.naturalWidth") == 112
    else:
        expect(page.locator("#base-note")).to_contain_text("No reconstruction model installed")
    expect(page.locator("#enh-bytes")).to_have_text("not fetched")

    page.click("#verify-button")
    expect(page.locator("#full-image")).to_be_visible(timeout=30_000)
    assert page.eval_on_selector("#full-image", "i => i.complete && i.naturalWidth") == 112
    enh = page.inner_text("#enh-bytes")
    assert re.fullmatch(r"\d+ B \(from the edge\)", enh), enh
    enh_bytes = int(enh.split()[0])
    assert 200 < enh_bytes < 20_000
    assert page.inner_text("#total-bytes").startswith(f"{enh_bytes + base_bytes} B")
    audit = page.locator("#audit-table tbody tr", has_text="full")
    expect(audit.first).to_contain_text("200")
    expect(audit.first).to_contain_text("edge")
    expect(audit.first).to_contain_text("key:")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        _save_small_png(shot, Path(os.environ["DASHBOARD_SCREENSHOT"]))

    # Verify again: served from the server's cache this time.
    page.click("#verify-button")
    expect(page.locator("#enh-bytes")).to_have_text(f"{enh_bytes} B (cached)")

    # Gallery: enrol this face as a new identity, rename it, delete it.
    page.fill("#enrol-new input[name=name]", "Visitor One")
    page.click("#enrol-new button[type=submit]")
    expect(page.locator("#toast")).to_contain_text("Enrolled Visitor One")
    page.click("nav >> text=Gallery")
    row = page.locator("#gallery-table tbody tr", has=page.locator('input[value="Visitor One"]'))
    expect(row).to_have_count(1)
    row.locator("input[name=name]").fill("Visitor 1")
    row.locator("button", has_text="Rename").click()
    expect(page.locator("#toast")).to_contain_text("Renamed to Visitor 1")
    page.reload()
    row = page.locator("#gallery-table tbody tr", has=page.locator('input[value="Visitor 1"]'))
    expect(row).to_have_count(1)
    page.once("dialog", lambda d: d.accept())
    row.locator("button", has_text="Delete").click()
    expect(page.locator("#toast")).to_contain_text("Deleted")
    expect(page.locator('input[value="Visitor 1"]')).to_have_count(0)

    # Sign out: the pages ask for the key again.
    page.click("text=Log out")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.goto(base + "/ui/gallery")
    expect(page.locator("h1")).to_have_text("Sign in")
    assert not errors, errors


def _save_small_png(src: Path, dest: Path) -> None:
    """The screenshot with a 256-colour palette (a fraction of the size; it goes in the repository)."""
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)
