"""The web service: an accessible, self-contained page, and a same-origin proxy to the API."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest
from targetlib import DIMENSION, clustered_embeddings, free_port, libpq_env, scratch_db, seed_identities


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag):
        self._in_title = False


@pytest.fixture(scope="module")
def stack(module_services):
    with scratch_db() as database:
        addresses = seed_identities(database, clustered_embeddings(60, 4, seed=9))
        api = module_services("api", libpq_env(database), ready_path="/readyz")
        web = module_services("web", {"API_BASE_URL": api.url})
        yield api, web, addresses


def test_page_is_accessible_and_self_contained(stack):
    _api, web, _ = stack
    response = httpx.get(web.url + "/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page = PageParser()
    page.feed(response.text)
    tags = page.tags
    assert ("html", {"lang": "en"}) in tags
    assert page.title.strip()
    assert any(t == "meta" and a.get("name") == "viewport" and "width=device-width" in a.get("content", "")
               for t, a in tags)
    assert any(t == "meta" and a.get("name") == "description" for t, a in tags)
    inputs = [a["id"] for t, a in tags if t == "input"]
    labelled = {a.get("for") for t, a in tags if t == "label"}
    assert inputs and set(inputs) <= labelled, "every input has a <label for=...>"
    assert any(t == "p" and a.get("aria-live") for t, a in tags)
    # No external resources: every src/href is same-origin (relative) or data:.
    for tag, attrs in tags:
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith("/") and not attrs[key].startswith("//"), (tag, attrs)
    for path in ("/app.js", "/app.css"):  # (the SVG's xmlns URL is a name, never fetched)
        asset = httpx.get(web.url + path)
        assert asset.status_code == 200 and not re.search(r"https?://|@import|url\(", asset.text), path
    assert httpx.get(web.url + "/favicon.svg").status_code == 200
    total = len(response.content) + sum(len(httpx.get(web.url + p).content) for p in ("/app.js", "/app.css"))
    assert total < 20_000, "light page: everything the browser loads stays small"


def test_proxy_passes_requests_and_answers_through(stack):
    api, web, addresses = stack
    identity = httpx.get(f"{web.url}/api/identities/{addresses[3]}").json()
    assert identity["address"] == addresses[3] and len(identity["embedding"]) == DIMENSION
    query = {"embedding": identity["embedding"], "k": 5}
    via_web = httpx.post(web.url + "/api/similarity", json=query)
    direct = httpx.post(api.url + "/api/similarity", json=query)
    assert via_web.status_code == 200 and via_web.json() == direct.json()
    assert via_web.json()["results"][0]["address"] == addresses[3]
    bad = httpx.post(web.url + "/api/similarity", content=b"{nope", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "body"
    assert httpx.get(f"{web.url}/api/identities/0x{'0' * 40}/trust").status_code == 404
    assert httpx.get(web.url + "/readyz").json()["status"] == "ready"


def test_proxy_reports_an_unreachable_api(services):
    web = services("web", {"API_BASE_URL": f"http://127.0.0.1:{free_port()}"})
    assert httpx.get(web.url + "/api/identities/0x" + "1" * 40).status_code == 502
    assert httpx.get(web.url + "/readyz").status_code == 503
    assert httpx.get(web.url + "/healthz").status_code == 200
