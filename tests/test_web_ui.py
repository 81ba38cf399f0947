"""The web UI and the API explorer in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium) against a real `facesphere serve` on 127.0.0.1, with every
host but the loopback address unresolvable, so that a page needing the network fails here.

With FACESPHERE_SCREENSHOTS=DIR the tests also save a PNG of each page into DIR (docs/ui/ is
made so: `make screenshots`).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from facesphere.serve.keys import KeyStore
from facesphere.serve.process import ServerProcess
from tests.lfw_photos import group_photo

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
UPLOAD_LIMIT_MB = 1
WAIT_S = 60
DESKTOP = (1200, 900)
PHONE = (390, 844)


@pytest.fixture(scope="module")
def chromium() -> tuple[Path, Path]:
    """The system browser and its driver; missing, the tests fail on CI and skip elsewhere."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        reason = (
            f"headless-browser tests need {' and '.join(missing)}: "
            "apt-get install chromium chromium-driver (`make test` does)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(f"NOT RUN: {reason}")
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A real server with a small upload limit, and a write key and a read key for it."""
    home = tmp_path_factory.mktemp("web-ui")
    store = KeyStore(home / "keys.sqlite")
    keys = {
        "write": store.create("ui-writer", "write")[1],
        "read": store.create("ui-reader", "read")[1],
    }
    with ServerProcess(home, extra_args=["--max-upload-mb", str(UPLOAD_LIMIT_MB)]) as server:
        yield server.url, keys


@pytest.fixture(scope="module")
def browser(
    chromium: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebDriver]:
    binary, driver = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        # No network: every name but the loopback address fails to resolve.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=direct://",
        "--proxy-bypass-list=*",
    ):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(str(driver)), options=options)
    chrome.set_window_size(*DESKTOP)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def photos(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths of the photos the tests upload."""
    folder = tmp_path_factory.mktemp("ui-photos")

    def lfw(name: str, number: int) -> str:
        return str(shared_data / "lfw" / "images" / name / f"{name}_{number:04d}.jpg")

    paths = {
        "powell1": lfw("Colin_Powell", 1),
        "powell2": lfw("Colin_Powell", 2),
        "powell3": lfw("Colin_Powell", 3),
        "powell4": lfw("Colin_Powell", 4),
        "chavez1": lfw("Hugo_Chavez", 1),
        "chavez2": lfw("Hugo_Chavez", 2),
    }
    scene = folder / "group.jpg"
    names = ["Aaron_Eckhart", "George_W_Bush", "Serena_Williams"]
    Image.fromarray(group_photo(names, (400, 760))).save(scene, quality=90)
    pair = folder / "powell-and-sharon.jpg"  # Colin_Powell_0001: removed from the gallery below
    Image.fromarray(group_photo(["Colin_Powell", "Ariel_Sharon"], (320, 580))).save(pair)
    blank = folder / "blank.png"
    Image.fromarray(np.full((240, 320, 3), 200, np.uint8)).save(blank)
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    huge = folder / "huge.png"  # incompressible: about 1.4 MiB, over the 1 MiB limit
    Image.fromarray(noise).save(huge)
    return {
        **paths,
        "group": str(scene),
        "known_and_stranger": str(pair),
        "blank": str(blank),
        "corrupt": str(corrupt),
        "huge": str(huge),
    }


# -- helpers ----------------------------------------------------------------------------------


def wait_for(browser: WebDriver, condition: Callable[[WebDriver], object], what: str) -> object:
    try:
        return WebDriverWait(browser, WAIT_S).until(lambda b: condition(b))
    except TimeoutException:
        message = browser.find_element(By.ID, "message").text
        raise AssertionError(f"timed out waiting for {what}; the page says {message!r}") from None


def by_id(browser: WebDriver, element_id: str) -> WebElement:
    return browser.find_element(By.ID, element_id)


def idle(browser: WebDriver) -> None:
    """Wait until the page's current request has finished."""
    wait_for(
        browser,
        lambda b: "busy" not in b.find_element(By.TAG_NAME, "body").get_attribute("class"),
        "the page to finish",
    )


def message(browser: WebDriver) -> str:
    idle(browser)
    box = by_id(browser, "message")
    return box.text if box.is_displayed() else ""


def upload(browser: WebDriver, input_id: str, *paths: str) -> None:
    field = by_id(browser, input_id)
    browser.execute_script("arguments[0].value = '';", field)
    field.send_keys("\n".join(paths))


def drop(browser: WebDriver, input_id: str, path: str) -> None:
    """Drop the file at `path` onto the drop zone of input `input_id`, as a user dragging it
    from elsewhere would (the file reaches the page through a detached file input)."""
    carrier = browser.execute_script(
        "const input = document.createElement('input'); input.type = 'file';"
        "input.style.display = 'none'; document.body.append(input); return input;"
    )
    carrier.send_keys(path)
    browser.execute_script(
        """
        const [carrier, id] = arguments;
        const files = new DataTransfer();
        files.items.add(carrier.files[0]);
        carrier.remove();
        const zone = document.querySelector(`.drop[data-for="${id}"]`);
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: files, cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: files, cancelable: true}));
        """,
        carrier,
        input_id,
    )


def screenshot(browser: WebDriver, name: str) -> None:
    """Save the whole page as DIR/name.png when FACESPHERE_SCREENSHOTS=DIR (a palette PNG, to
    keep it small)."""
    folder = os.environ.get("FACESPHERE_SCREENSHOTS")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    width, height = browser.execute_script(
        "const page = document.querySelector('main') || document.body;"
        "return [document.documentElement.clientWidth,"
        " Math.ceil(page.getBoundingClientRect().bottom + scrollY + 16)];"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": min(height, 2600), "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(
        Path(folder) / f"{name}.png", optimize=True
    )


def sign_in(browser: WebDriver, url: str, key: str) -> None:
    browser.get(url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(url + "/")
    by_id(browser, "api-key").send_keys(key)
    by_id(browser, "signin-form").submit()
    wait_for(browser, lambda b: b.find_element(By.ID, "nav").is_displayed(), "signing in")


def tab(browser: WebDriver, view: str) -> None:
    browser.find_element(By.CSS_SELECTOR, f".tab[data-view='{view}']").click()
    idle(browser)


def canvas_has_colour(browser: WebDriver, canvas_id: str, rgb: tuple[int, int, int]) -> bool:
    """Whether any pixel of the canvas is exactly `rgb` (what the UI draws boxes in)."""
    script = """
        const canvas = document.getElementById(arguments[0]);
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const [r, g, b] = [arguments[1], arguments[2], arguments[3]];
        for (let i = 0; i < data.length; i += 4) {
            if (data[i] === r && data[i + 1] === g && data[i + 2] === b) return true;
        }
        return false;
    """
    return bool(browser.execute_script(script, canvas_id, *rgb))


FIRST_BOX = (0x22, 0xC5, 0x5E)  # COLOURS[0] of app.js


# -- the tests --------------------------------------------------------------------------------


def test_docs_render_without_network(
    browser: WebDriver, served: tuple[str, dict[str, str]]
) -> None:
    url, _ = served
    browser.get(url + "/docs")
    wait_for(
        browser,
        lambda b: any("/v1/detect" in e.text for e in b.find_elements(By.CSS_SELECTOR, ".opblock")),
        "Swagger UI's operation list",
    )
    assert "facesphere" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
    screenshot(browser, "docs")
    browser.get(url + "/redoc")
    wait_for(browser, lambda b: "/v1/detect" in b.find_element(By.TAG_NAME, "body").text, "ReDoc")
    # The blocked network is real: a page from elsewhere cannot load.
    with pytest.raises(WebDriverException, match="ERR_NAME_NOT_RESOLVED"):
        browser.get("http://example.com/")


def test_sign_in_keeps_the_key_in_the_session(
    browser: WebDriver, served: tuple[str, dict[str, str]]
) -> None:
    url, keys = served
    browser.get(url + "/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(url + "/")
    assert by_id(browser, "view-signin").is_displayed() and not by_id(browser, "nav").is_displayed()
    screenshot(browser, "sign-in")
    by_id(browser, "api-key").send_keys("fs_wrong_key")
    by_id(browser, "signin-form").submit()
    assert "Wrong or revoked API key" in message(browser)
    assert by_id(browser, "view-signin").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('facesphere.apiKey')") is None
    sign_in(browser, url, keys["read"])
    assert (
        browser.execute_script("return sessionStorage.getItem('facesphere.apiKey')") == keys["read"]
    )
    assert browser.execute_script("return localStorage.length") == 0
    browser.refresh()  # the session survives a reload of the tab
    wait_for(
        browser, lambda b: b.find_element(By.ID, "view-detect").is_displayed(), "the detect view"
    )
    by_id(browser, "sign-out").click()
    assert by_id(browser, "view-signin").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('facesphere.apiKey')") is None


def test_detect_draws_each_face_and_explains_refusals(
    browser: WebDriver, served: tuple[str, dict[str, str]], photos: dict[str, str]
) -> None:
    url, keys = served
    sign_in(browser, url, keys["read"])
    upload(browser, "detect-file", photos["group"])
    assert message(browser) == ""
    assert by_id(browser, "detect-summary").text.startswith("3 faces found")
    rows = by_id(browser, "detect-faces").find_elements(By.TAG_NAME, "tr")
    assert len(rows) == 4  # a header and one row per face
    canvas = by_id(browser, "detect-canvas")
    assert (canvas.get_property("width"), canvas.get_property("height")) == (760, 400)
    assert canvas_has_colour(browser, "detect-canvas", FIRST_BOX)
    screenshot(browser, "detect")

    drop(browser, "detect-file", photos["blank"])
    assert message(browser) == ""
    assert by_id(browser, "detect-summary").text == "No face found in blank.png."
    assert not canvas_has_colour(browser, "detect-canvas", FIRST_BOX)

    upload(browser, "detect-file", photos["corrupt"])
    assert message(browser).startswith("Bad input:")
    upload(browser, "detect-file", photos["huge"])
    assert message(browser).startswith("File too large:")


def test_compare_shows_decision_threshold_and_model(
    browser: WebDriver, served: tuple[str, dict[str, str]], photos: dict[str, str]
) -> None:
    url, keys = served
    sign_in(browser, url, keys["read"])
    tab(browser, "compare")
    upload(browser, "compare-a", photos["powell1"])
    upload(browser, "compare-b", photos["powell2"])
    by_id(browser, "compare-run").click()
    assert message(browser) == ""
    verdict = by_id(browser, "compare-result")
    assert verdict.find_element(By.TAG_NAME, "strong").text == "Same person"

    def field(name: str) -> str:
        return verdict.find_element(By.CSS_SELECTOR, f"dd[data-field='{name}']").text

    assert float(field("similarity")) > float(field("threshold")) > 0
    assert field("model") == "dlib-resnet+sface"
    assert canvas_has_colour(browser, "compare-canvas-a", FIRST_BOX)
    screenshot(browser, "compare")
    upload(browser, "compare-b", photos["chavez1"])
    by_id(browser, "compare-run").click()
    assert message(browser) == ""
    assert verdict.find_element(By.TAG_NAME, "strong").text == "Different people"
    assert float(field("similarity")) < float(field("threshold"))
    upload(browser, "compare-b", photos["blank"])
    by_id(browser, "compare-run").click()
    assert "image_b" in message(browser)


def subjects(browser: WebDriver) -> dict[str, str]:
    """The subject cards: name -> face count text."""
    idle(browser)
    cards = browser.find_elements(By.CSS_SELECTOR, "#subject-grid .subject")
    return {
        c.get_attribute("data-subject"): c.find_element(By.CSS_SELECTOR, ".hint").text
        for c in cards
    }


def enroll(browser: WebDriver, subject: str, *paths: str) -> str:
    field = by_id(browser, "enroll-subject")
    field.clear()
    field.send_keys(subject)
    upload(browser, "enroll-files", *paths)
    by_id(browser, "enroll-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    return message(browser)


def test_galleries_enroll_identify_and_remove(
    browser: WebDriver, served: tuple[str, dict[str, str]], photos: dict[str, str]
) -> None:
    url, keys = served
    sign_in(browser, url, keys["write"])
    tab(browser, "galleries")
    by_id(browser, "gallery-name").send_keys("people")
    by_id(browser, "gallery-create").submit()
    assert message(browser) == "Gallery people is ready."
    assert by_id(browser, "gallery-title").text == "people"

    # Several photos into a new subject, then one more into the existing one.
    assert enroll(browser, "Colin_Powell", photos["powell1"], photos["powell2"]) == (
        "Enrolled 2 face(s) of Colin_Powell."
    )
    assert enroll(browser, "Hugo_Chavez", photos["chavez1"]) == "Enrolled 1 face(s) of Hugo_Chavez."
    assert (
        enroll(browser, "Colin_Powell", photos["powell3"]) == "Enrolled 1 face(s) of Colin_Powell."
    )
    assert subjects(browser) == {"Colin_Powell": "3 faces", "Hugo_Chavez": "1 face"}
    # A refused first enrollment leaves no empty subject behind.
    refused = enroll(browser, "Nobody", photos["blank"], photos["chavez2"])
    assert refused.startswith("Bad input:") and "no face in blank.png" in refused
    assert set(subjects(browser)) == {"Colin_Powell", "Hugo_Chavez"}

    # Each subject card shows its first face's 112x112 thumbnail.
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#subject-grid .thumb")
    wait_for(
        browser, lambda b: all(t.get_property("naturalWidth") == 112 for t in thumbs), "thumbnails"
    )
    assert all(t.get_attribute("src").startswith("blob:") for t in thumbs)

    # A subject's faces, one removed.
    browser.find_element(
        By.CSS_SELECTOR, "#subject-grid .subject[data-subject='Colin_Powell']"
    ).click()
    idle(browser)
    faces = browser.find_elements(By.CSS_SELECTOR, "#face-list .face")
    assert len(faces) == 3
    removed = faces[0].get_attribute("data-face-id")
    faces[0].find_element(By.TAG_NAME, "button").click()
    assert message(browser) == f"Face {removed} removed."
    assert subjects(browser)["Colin_Powell"] == "2 faces"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#face-list .face")) == 2
    screenshot(browser, "galleries")

    # Identify: a known face, then a photo of him beside a stranger (unknown: under the threshold).
    tab(browser, "identify")
    assert by_id(browser, "identify-gallery").get_attribute("value") == "people"
    upload(browser, "identify-file", photos["powell4"])
    assert message(browser) == ""
    who = browser.find_element(By.CSS_SELECTOR, "#identify-faces li strong")
    assert who.text.startswith("Colin_Powell (") and who.get_attribute("class") == "known"
    upload(browser, "identify-file", photos["known_and_stranger"])
    assert message(browser) == ""
    faces = browser.find_elements(By.CSS_SELECTOR, "#identify-faces li")
    assert len(faces) == 2
    verdicts = {f.find_element(By.TAG_NAME, "strong").get_attribute("class") for f in faces}
    assert verdicts == {"known", "unknown"}
    for face in faces:
        who = face.find_element(By.TAG_NAME, "strong")
        assert who.text.startswith("Colin_Powell (") or who.text == "unknown"
        assert "best matches: " in face.find_element(By.CLASS_NAME, "hint").text
    assert "Threshold" in by_id(browser, "identify-summary").text
    assert canvas_has_colour(browser, "identify-canvas", FIRST_BOX)
    screenshot(browser, "identify")

    # A read-only key may look but not change anything.
    sign_in(browser, url, keys["read"])
    tab(browser, "galleries")
    assert set(subjects(browser)) == {"Colin_Powell", "Hugo_Chavez"}
    refused = enroll(browser, "Colin_Powell", photos["powell4"])
    assert refused == "Not allowed with this key: this key is read-only."
    assert subjects(browser)["Colin_Powell"] == "2 faces"

    # Removing a subject, then the gallery (each confirmed in a dialog).
    sign_in(browser, url, keys["write"])
    tab(browser, "galleries")
    browser.find_element(
        By.CSS_SELECTOR, "#subject-grid .subject[data-subject='Hugo_Chavez']"
    ).click()
    idle(browser)
    by_id(browser, "subject-delete").click()
    browser.switch_to.alert.accept()
    assert message(browser) == "Hugo_Chavez removed with 1 face(s)."
    assert set(subjects(browser)) == {"Colin_Powell"}
    by_id(browser, "gallery-delete").click()
    browser.switch_to.alert.accept()
    assert message(browser) == "Gallery people deleted."
    assert by_id(browser, "gallery-list").text == "No gallery yet: create one."


def test_phone_width_layout(
    browser: WebDriver, served: tuple[str, dict[str, str]], photos: dict[str, str]
) -> None:
    url, keys = served
    browser.set_window_size(*PHONE)
    try:
        sign_in(browser, url, keys["read"])
        upload(browser, "detect-file", photos["group"])
        wait_for(
            browser,
            lambda b: b.find_element(By.ID, "detect-summary").text.startswith("3 faces found"),
            "the faces of the group photo",
        )
        viewport = browser.execute_script("return window.innerWidth")
        assert viewport <= PHONE[0]
        # Nothing wider than the screen: no sideways scrolling, the photo scaled to fit.
        assert browser.execute_script("return document.documentElement.scrollWidth") <= viewport
        shown = by_id(browser, "detect-canvas").rect
        assert 0 < shown["width"] <= viewport and shown["x"] >= 0
        for view in ("detect", "compare", "galleries", "identify"):
            button = browser.find_element(By.CSS_SELECTOR, f".tab[data-view='{view}']")
            assert button.is_displayed() and button.rect["x"] + button.rect["width"] <= viewport
        screenshot(browser, "phone")
    finally:
        browser.set_window_size(*DESKTOP)
