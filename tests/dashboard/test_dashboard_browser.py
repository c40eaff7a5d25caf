"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real analysis
server process (embedded Redis) and a real edge agent process streaming a clip of the sample faces.

The walk, from the keyboard: sign in, watch the agent's faces arrive on the live view (server-sent
events, no reload), open a face, verify it (the enhancement layer comes from the edge agent on
demand), show its scene (the context layer, from the edge too), enrol it on the watchlist, watch its
hits grouped into one alert and acknowledge it, see a rename reach the live view, search for the
person, open a result and erase it. Screenshots land in the test's tmp dir; set
``DASHBOARD_SCREENSHOTS=deploy/screenshots`` to also write them there (dashboard.png, live.png).

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
from pathlib import Path

import pytest

from testkit.processes import ServerProcess, clean_env, wait_until

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
    server = ServerProcess(folder, data_dir=folder / "server", log_name="server.log", FACESERVER_API_KEYS=API_KEY,
                           FACESERVER_CAMERA_TOKENS=json.dumps({"*": TOKEN}))
    state = {"folder": folder, "clip": clip, "http": server.http_port, "grpc": server.grpc_port, "agent": None}
    try:
        server.start(timeout=120)  # until /readyz answers 200
        yield state
    finally:
        _stop(state["agent"])
        server.stop()


def start_agent(system: dict) -> subprocess.Popen:
    """The edge agent on the clip, looping (a door camera: the same people pass again and again)."""
    folder = system["folder"]
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "--server", f"127.0.0.1:{system['grpc']}", "--data-dir",
         str(folder / "edge"), "--source", str(system["clip"]), "--camera-id", "front-door", "--sample-fps", "4",
         "--interval", "60", "--loop"], cwd=ROOT, stdout=open(folder / "edge.log", "w"), stderr=subprocess.STDOUT,
        env=clean_env(EDGE_TOKEN=TOKEN, EDGE_TRACKING__TTL_S="0.5", EDGE_STATUS_INTERVAL_S="1"))
    system["agent"] = agent
    return agent


@pytest.fixture(scope="module")
def browser():
    import tempfile

    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(profile, executable_path=executable, headless=True,
                                                       args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 860},
                                                       timezone_id="Europe/Paris", locale="en-GB")
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


def _rest(system: dict, method: str, path: str, **kw):
    import httpx

    r = httpx.request(method, f"http://127.0.0.1:{system['http']}{path}", headers={"X-API-Key": API_KEY}, timeout=30,
                      **kw)
    return r


def _screenshot(page, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("DASHBOARD_SCREENSHOTS"):
        _save_small_png(shot, Path(os.environ["DASHBOARD_SCREENSHOTS"]) / name)


TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+$")  # date, time and zone


def test_operator_day_by_keyboard(system, browser, tmp_path):
    """Sign in, watch faces arrive (dated, with their bytes, nothing cut off), open one, verify it, see its
    scene, enrol it on the watchlist (the page says who it is at once), watch its hits grouped into one
    alert and acknowledge it, see a rename reach the live view and a face page, search for the person, open
    and erase a face: every step from the keyboard. A Verify that fails shows in the audit panel."""
    from playwright.sync_api import expect

    from analysis_server.face_images import reconstruction_installed

    base = f"http://127.0.0.1:{system['http']}"
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    navigations = lambda: page.evaluate("performance.getEntriesByType('navigation').length")  # noqa: E731

    # Not signed in: the login form (its field has the focus), then back to the live view.
    page.goto(base + "/ui")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.keyboard.type("wrong-key-123")
    page.keyboard.press("Enter")
    expect(page.locator(".alert-error")).to_contain_text("not valid")
    page.keyboard.type(API_KEY)
    page.keyboard.press("Enter")
    expect(page.locator("#live-state")).to_have_text("live")
    expect(page.locator("#no-cameras")).to_be_visible()

    # The agent starts now: its faces arrive over SSE, without a reload, dated and with their bytes.
    agent = start_agent(system)
    cards = page.locator('.camera[data-camera-id="front-door"] .face-card')
    try:
        expect(cards.first).to_be_visible(timeout=120_000)
    except AssertionError:
        raise AssertionError("no face arrived; agent log:\n" + (system["folder"] / "edge.log").read_text()[-3000:])
    assert agent.poll() is None
    wait_until(lambda: cards.count() >= 2, 60, "a second face on the live view")
    assert navigations() == 1  # same page, no reload
    first = cards.first
    assert re.fullmatch(r"\d+ B", first.locator(".face-bytes").inner_text()), first.inner_text()
    assert TIME.match(first.locator("time").inner_text()), first.locator("time").inner_text()
    cut = page.evaluate("""() => [...document.querySelectorAll('.face-meta > *, .hit-body > *')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)""")
    assert cut == [], cut

    # j focuses the newest face, Enter opens it.
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.classList.contains('face-card')")
    face_id = page.evaluate("document.activeElement.dataset.faceId")
    page.keyboard.press("Enter")
    expect(page.locator("h2", has_text="Full fidelity")).to_be_visible()
    assert page.locator(".face-page").get_attribute("data-face-id") == face_id
    base_bytes = int(page.locator(".face-page").get_attribute("data-base-bytes"))
    assert 8 <= base_bytes <= 80
    if reconstruction_installed():
        expect(page.locator("#base-image")).to_be_visible()
        assert page.eval_on_selector("#base-image", "i => i.naturalWidth") == 112
        # the live view's thumbnails are logged apart: one line, never a row each
        expect(page.locator("#audit-thumbnails")).to_contain_text("thumbnail")
    expect(page.locator("#enh-bytes")).to_have_text("not fetched")
    codecs = page.eval_on_selector_all("#verify-form select option", "os => os.map(o => o.value)")
    assert codecs == ["", "avif", "jpeg", "jpeg2000", "png", "webp"]  # the learned codecs are not offered

    # v: verify (the enhancement layer comes from the edge agent).
    page.keyboard.press("v")
    expect(page.locator("#full-image")).to_be_visible(timeout=30_000)
    assert page.eval_on_selector("#full-image", "i => i.complete && i.naturalWidth") == 112
    enh = page.inner_text("#enh-bytes")
    assert re.fullmatch(r"\d+ B \(from the edge\)", enh), enh
    enh_bytes = int(enh.split()[0])
    assert 200 < enh_bytes < 20_000
    assert page.inner_text("#total-bytes").startswith(f"{enh_bytes + base_bytes} B")
    row = page.locator("#audit-table tbody tr", has_text="full").first
    for text in ("200", "edge", "key:", "jpeg q75"):
        expect(row).to_contain_text(text)
    assert page.locator("#audit-table tbody tr", has_text="thumbnail").count() == 0

    # c: the scene around the person, from the edge, the face outlined in it.
    page.keyboard.press("c")
    expect(page.locator("#context-image")).to_be_visible(timeout=30_000)
    size = page.eval_on_selector("#context-image", "i => [i.naturalWidth, i.naturalHeight]")
    assert 100 <= max(size) <= 320 and size[0] > 112
    box = page.locator("#context-box").bounding_box()
    frame = page.locator("#scene-frame").bounding_box()
    assert box["width"] > 10 and frame["x"] <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
    expect(page.locator("#context-size")).to_contain_text("avif")
    expect(page.locator("#audit-table tbody tr", has_text="context").first).to_contain_text("avif q50")
    _screenshot(page, tmp_path, "dashboard.png")

    # v again: from the server's cache this time.
    page.keyboard.press("v")
    expect(page.locator("#enh-bytes")).to_have_text(f"{enh_bytes} B (cached)")

    # n: enrol as a new identity, on the watchlist; the page says who this is at once, without a reload.
    page.keyboard.press("n")
    page.keyboard.type("Visitor One")
    page.keyboard.press("Tab")
    page.keyboard.press("Space")  # the watchlist switch
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#toast")).to_contain_text("Enrolled Visitor One")
    expect(page.locator("#face-name")).to_have_text("Visitor One")
    expect(page.locator("#watchlist-badge")).to_be_visible()
    expect(page.locator("#face-match")).to_contain_text("Visitor One")
    expect(page.locator("#audit-table")).to_contain_text("create identity")
    toast, erase = page.locator("#toast").bounding_box(), page.locator("#erase-face").bounding_box()
    assert toast["y"] + toast["height"] <= erase["y"] or erase["y"] + erase["height"] <= toast["y"]  # not covered
    identity_id = page.locator("#face-title").get_attribute("data-identity-id")
    assert _rest(system, "GET", f"/faces/{face_id}").json()["match"]["identity_id"] == identity_id

    # Esc leaves the name field, g l: the live view; the person keeps passing the door: one alert, its count grows.
    page.keyboard.press("Escape")
    page.keyboard.press("g")
    page.keyboard.press("l")
    expect(page.locator("#live-state")).to_have_text("live")
    alert = page.locator(f'#hits .hit-open[data-identity-id="{identity_id}"]')
    wait_until(lambda: alert.count() == 1 and int(alert.get_attribute("data-hits")) >= 2, 120,
               "two watchlist hits of the enrolled person, grouped")
    assert page.locator(f'#hits .hit[data-identity-id="{identity_id}"]').count() == 1
    expect(alert.locator(".hit-name")).to_have_text("Visitor One")
    expect(alert.locator(".hit-count")).to_contain_text("front-door")
    if reconstruction_installed():
        assert alert.locator(".hit-thumb img").evaluate("i => i.naturalWidth") == 112
    _screenshot(page, tmp_path, "live.png")
    loaded = navigations()
    # A rename elsewhere reaches this page's cards and alert without a reload.
    assert _rest(system, "PATCH", f"/identities/{identity_id}", json={"name": "Visitor 1"}).status_code == 200
    expect(alert.locator(".hit-name")).to_have_text("Visitor 1")
    named = page.locator(f'.face-card[data-identity-id="{identity_id}"] .face-name')
    expect(named.first).to_have_text("Visitor 1")
    # h: the newest open alert's Acknowledge, Enter: handled (audited), it stays listed as acknowledged.
    page.keyboard.press("h")
    assert page.evaluate("document.activeElement.dataset.action") == "acknowledge"
    page.keyboard.press("Enter")
    expect(page.locator("#toast")).to_contain_text("acknowledged")
    expect(page.locator(f'#hits .hit-acknowledged[data-identity-id="{identity_id}"]').first).to_be_visible()
    assert navigations() == loaded
    assert any(e["action"] == "acknowledge_hits" and e["identity_id"] == identity_id
               for e in _rest(system, "GET", "/audit").json())

    # /: search; the person from the keyboard; Enter searches; j and Enter open a result.
    page.keyboard.press("/")
    expect(page.locator("#search-form select[name=identity]")).to_be_focused()
    page.keyboard.press("ArrowDown")
    assert page.eval_on_selector("#search-form select[name=identity]", "s => s.value") == identity_id
    page.keyboard.press("Enter")
    results = page.locator(".results .face-card")
    expect(results.first).to_be_visible()
    page.keyboard.press("j")
    target = page.evaluate("document.activeElement.dataset.faceId")
    page.keyboard.press("Enter")
    expect(page.locator(".face-page")).to_have_attribute("data-face-id", target)
    expect(page.locator("#face-name")).to_have_text("Visitor 1")
    # A rename elsewhere reaches the face page too.
    assert _rest(system, "PATCH", f"/identities/{identity_id}", json={"name": "Visitor 2"}).status_code == 200
    expect(page.locator("#face-name")).to_have_text("Visitor 2")

    # Delete: erase this face (after the browser's confirmation); back on the live view, the face gone.
    page.once("dialog", lambda d: d.accept())
    page.keyboard.press("Delete")
    expect(page.locator("#live-state")).to_have_text("live")
    assert _rest(system, "GET", f"/faces/{target}").status_code == 404

    # The camera goes offline: a Verify now fails, and the failure is in the audit panel at once.
    _stop(system["agent"])
    other = next(f["face_id"] for f in _rest(system, "GET", "/faces").json()["items"] if f["face_id"] != target)
    page.goto(base + f"/ui/faces/{other}")
    page.select_option("#verify-form select[name=codec]", "webp")
    page.keyboard.press("v")
    expect(page.locator("#verify-error")).to_be_visible(timeout=30_000)
    expect(page.locator("#audit-table tbody tr", has_text="504").first).to_contain_text("webp")

    # The gallery has the renamed identity; sign out and the pages ask for the key again.
    page.keyboard.press("g")
    page.keyboard.press("g")
    expect(page.locator('#gallery-table input[value="Visitor 2"]')).to_have_count(1)
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
