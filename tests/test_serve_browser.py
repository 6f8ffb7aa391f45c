"""The upload page and the API docs in headless Chromium, with every request off this server blocked:
both must work with the network unplugged."""

import base64
import os

import pytest

from kcaptcha.serve import create_app
from tests.test_serve import MODEL, digit_captchas
from tests.test_serve_limits import running

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def captchas():
    return digit_captchas()


@pytest.fixture(scope="module")
def server():
    """The shipped model served as `digits` and `second` on loopback (in this process)."""
    from kcaptcha.reading.recognizer import load_model

    recognizer = load_model(MODEL)
    with running(create_app({MODEL: recognizer, "second": recognizer})) as (client, port):
        yield {"client": client, "url": f"http://127.0.0.1:{port}"}


def offline_page(browser, server):
    """A new page whose requests to anywhere but `server` fail, as with the network unplugged; and the list
    of those it tried."""
    page, blocked = browser.new_page(), []
    local = server["url"].split("/")[2]

    def route(request_route):
        if request_route.request.url.split("/")[2] == local or request_route.request.url.startswith("data:"):
            request_route.continue_()
        else:
            blocked.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    return page, blocked


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


def test_upload_page_reads_a_picked_and_a_dropped_image(browser, server, captchas, tmp_path):
    samples = [data for _, data in captchas]
    expected = [label for label, _ in captchas[:2]]
    picked = tmp_path / "captcha.png"
    picked.write_bytes(samples[0])
    page, blocked = offline_page(browser, server)
    page.goto(server["url"] + "/")
    page.wait_for_selector("#model option[value=second]", state="attached")
    assert page.input_value("#model") == "digits"

    page.set_input_files("#file", str(picked))
    page.wait_for_function("document.getElementById('text').textContent !== ''")
    assert page.text_content("#text") == expected[0]
    assert "confidence" in page.text_content("#summary") and " ms" in page.text_content("#summary")

    second_before = server["client"].get("/readyz").json()["models"]["second"]["images"]
    page.select_option("#model", "second")  # the same image, read again by the other model
    page.wait_for_function("document.getElementById('summary').textContent !== ''")
    assert page.text_content("#text") == expected[0]
    assert server["client"].get("/readyz").json()["models"]["second"]["images"] == second_before + 1

    page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
    }""", base64.b64encode(samples[1]).decode())
    page.wait_for_function("document.getElementById('summary').textContent !== ''")
    assert page.text_content("#text") == expected[1]

    not_image = tmp_path / "notes.png"
    not_image.write_bytes(b"not an image")
    page.set_input_files("#file", str(not_image))
    page.wait_for_function("document.getElementById('error').textContent !== ''")
    assert "not an image" in page.text_content("#error") and page.text_content("#text") == ""
    assert blocked == []  # no external assets
    page.close()


def test_api_docs_work_offline(browser, server):
    page, blocked = offline_page(browser, server)
    page.goto(server["url"] + "/docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/v1/models/{name}/predict']", timeout=30000)
    page.click("text=Liveness: the process is up and its event loop answers")
    page.click("button:has-text('Try it out')")
    page.click("button:has-text('Execute')")
    page.wait_for_selector(".live-responses-table .response-col_status:has-text('200')", timeout=30000)
    assert '"status": "ok"' in page.text_content(".live-responses-table")
    page.goto(server["url"] + "/redoc")
    page.wait_for_selector("text=The parent project's API", timeout=30000)
    assert blocked == []
    page.close()


def test_review_page_corrects_three_images_by_keyboard(browser, tmp_path):
    """Four images of a `bin/collect` folder, two misread: the page shows the least sure first, the keyboard
    corrects, accepts and skips, and labels.csv holds each decision while the images stay as they were."""
    import time

    from kcaptcha import files

    from kcaptcha.data import labels
    from kcaptcha.reading.recognizer import load_model
    from tests.test_review import collected_folder

    folder, rows = collected_folder(tmp_path, [0.6, 0.3, 0.9, 0.1])
    misread = {rows[1].filename: "0000", rows[3].filename: "1111"}
    labels.update(folder, {name: {"label": label} for name, label in misread.items()})
    truth = {row.filename: row.label for row in rows}
    before = {path: files.sha256(path) for path in files.list_images(folder)}
    with running(create_app({MODEL: load_model(MODEL)}, review_dir=folder, access_log=False)) as (_, port):
        page, blocked = offline_page(browser, {"url": f"http://127.0.0.1:{port}"})
        started = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/review")
        shown = []
        for step, (name, keys) in enumerate([(rows[3].filename, truth[rows[3].filename]),  # least sure: misread
                                             (rows[1].filename, truth[rows[1].filename]),  # misread
                                             (rows[0].filename, None)]):  # read right: Enter accepts
            page.wait_for_function(f"document.getElementById('filename')?.textContent === {name!r}")
            page.wait_for_function("document.getElementById('image').complete")
            shown.append(page.input_value("#label"))
            if keys:
                page.keyboard.type(keys)  # the reading is selected: typing replaces it
            page.keyboard.press("Enter")
        page.wait_for_function(f"document.getElementById('filename').textContent === {rows[2].filename!r}")
        per_image = (time.perf_counter() - started) / 3
        page.keyboard.press("Escape")  # skip the last one
        page.wait_for_selector("#done", state="visible")
        progress = page.text_content("#progress")
        page.close()
    assert shown == ["1111", "0000", truth[rows[0].filename]]  # the model's readings, pre-filled
    written = {row.filename: (row.label, row.status) for row in labels.read(os.path.join(folder, labels.FILE))}
    assert written == {rows[3].filename: (truth[rows[3].filename], "corrected"),
                       rows[1].filename: (truth[rows[1].filename], "corrected"),
                       rows[0].filename: (truth[rows[0].filename], "accepted"),
                       rows[2].filename: (truth[rows[2].filename], "skipped")}
    assert progress.startswith("4 of 4 reviewed, 0 left")
    assert {path: files.sha256(path) for path in files.list_images(folder)} == before
    assert blocked == []
    assert per_image <= 1.0, f"{per_image:.2f} s of page time per image"


def test_review_page_says_why_a_label_or_decision_is_refused(browser, tmp_path):
    """Bad labels are refused with the server's message on the page, the image stays for a fix; an image decided
    meanwhile by an override is refused too, and the page goes on with the next one."""
    from kcaptcha.data import labels
    from kcaptcha.reading.recognizer import load_model
    from tests.test_review import collected_folder

    folder, rows = collected_folder(tmp_path, [0.1, 0.2, 0.3])
    with running(create_app({MODEL: load_model(MODEL)}, review_dir=folder, access_log=False)) as (client, port):
        page, blocked = offline_page(browser, {"url": f"http://127.0.0.1:{port}"})
        page.goto(f"http://127.0.0.1:{port}/review")
        page.wait_for_function(f"document.getElementById('filename')?.textContent === {rows[0].filename!r}")
        assert page.text_content("#rules") == "A label: 4 characters of 0123456789, no spaces."
        for typed, message in (("ÄÖ€", "characters 'ÄÖ€' are not in the charset '0123456789' (the digits model's"),
                               ("ab c", "it holds a space"), ("12,3", "characters ',' are not in the charset")):
            page.keyboard.press("Control+a")
            page.keyboard.type(typed)
            page.keyboard.press("Enter")
            page.wait_for_function(f"document.getElementById('error').textContent.includes({message!r})")
            assert page.text_content("#filename") == rows[0].filename and page.input_value("#label") == typed
        assert [row.status for row in labels.read(os.path.join(folder, labels.FILE))] == ["unreviewed"] * 3

        overridden = client.post("/review/decision", json={"reviewer": "lead", "filename": rows[0].filename,
                                                           "action": "unreadable", "override": True})
        assert overridden.status_code == 200 and overridden.json()["item"]["filename"] == rows[1].filename
        page.keyboard.press("Control+a")
        page.keyboard.type(rows[0].label)
        page.keyboard.press("Enter")
        page.wait_for_function(f"document.getElementById('filename').textContent === {rows[2].filename!r}")
        assert "was decided already (unreadable" in page.text_content("#error")
        page.keyboard.press("Enter")  # the reading is right: accepted; the last image is with "lead"
        page.wait_for_selector("#done", state="visible")
        assert page.text_content("#done").startswith("Images left: 1, each handed to another reviewer")
        assert page.text_content("#error") == ""
        page.close()
    written = {row.filename: (row.label, row.status) for row in labels.read(os.path.join(folder, labels.FILE))}
    assert written == {rows[0].filename: (rows[0].label, "unreadable"), rows[1].filename: (rows[1].label, "unreviewed"),
                       rows[2].filename: (rows[2].label, "accepted")}
    assert blocked == []
