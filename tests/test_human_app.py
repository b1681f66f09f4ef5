"""The rating website through FastAPI's TestClient: sign-in, saving and editing, and security
(tokens, CSRF, injection strings, XSS payloads)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from human_helpers import csrf_of, make_study, url_of, version_of

from drover.human.app import SESSION_COOKIE, create_app
from drover.human.store import Study
from drover.human.summary import summarize

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>"\'&'
SQLI = "Robert'); DROP TABLE answers;-- \" OR 1=1 --"


def client_for(study: Study, token: str | None) -> TestClient:
    client = TestClient(create_app(study), follow_redirects=False)
    if token:
        page = client.get("/login", params={"token": token})
        assert page.status_code == 200 and "sign-in" in page.text
        r = client.post("/login", data={"token": token, "csrf": csrf_of(page.text)})
        assert r.status_code == 303
    return client


def my_items(study: Study, rater: str) -> list[str]:
    return [a.item_id for a in study.assignments(rater)]


def post_item(s: Study, client: TestClient, item: str, page: str | None = None, **fields) -> object:
    page = page if page is not None else client.get(url_of(s, item)).text
    data = {"csrf": csrf_of(page), "version": version_of(page), **fields}
    return client.post(url_of(s, item), data=data)


TULU_OK = {"acceptable_a": "yes", "acceptable_b": "no", "preference": "1"}


@pytest.fixture
def study(tmp_path):
    directory, tokens = make_study(tmp_path, "tulu", n=4, overlap=1)
    s = Study(directory)
    yield s, tokens
    s.close_engine()


def test_sign_in_resume_and_progress(study):
    s, tokens = study
    anon = client_for(s, None)
    assert anon.get("/").headers["location"] == "/login"
    assert anon.get("/login", params={"token": "nope"}).status_code == 403
    alice = client_for(s, tokens["alice"])
    first = alice.get("/").headers["location"]
    items = my_items(s, "alice")
    assert first == url_of(s, items[0])
    page = alice.get(first).text
    assert f"1 / {len(items)}" in page and 'id="item-id">' + items[0] in page and "0 answered" in page
    r = post_item(s, alice, items[0], **TULU_OK)
    assert r.status_code == 303 and r.headers["location"] == url_of(s, items[1])
    # a new client (another device, or after a server restart) resumes where alice left off
    again = client_for(s, tokens["alice"])
    assert again.get("/").headers["location"] == url_of(s, items[1])
    assert "1 answered" in again.get(url_of(s, items[1])).text


def test_second_submission_is_an_explicit_edit_with_history(study):
    s, tokens = study
    alice = client_for(s, tokens["alice"])
    item = my_items(s, "alice")[0]
    assert post_item(s, alice, item, **TULU_OK).status_code == 303
    page = alice.get(url_of(s, item)).text
    assert version_of(page) == "1" and "Save edit" in page and 'id="saved"' in page
    assert re.search(r'name="preference" value="1" data-key="\d" checked', page)  # the saved answer is shown
    stale = page
    assert post_item(s, alice, item, page=page, **{**TULU_OK, "preference": "-2"}).status_code == 303
    # the stale page (version 1) is refused: 409, nothing lost, the selection kept for an explicit retry
    r = post_item(s, alice, item, page=stale, **{**TULU_OK, "preference": "0"})
    assert r.status_code == 409 and "saved meanwhile" in r.text and version_of(r.text) == "2"
    assert re.search(r'name="preference" value="0" data-key="\d" checked', r.text)
    history = s.history("alice", item)
    assert [h.version for h in history] == [1, 2]
    swapped = s.assignments("alice")[0].swapped
    assert [h.answers["preference"] for h in history] == ([-1, 2] if swapped else [1, -2])
    assert s.answer("alice", item).version == 2


def test_rejected_submit_keeps_selections(study):
    s, tokens = study
    alice = client_for(s, tokens["alice"])
    item = my_items(s, "alice")[0]
    r = post_item(s, alice, item, acceptable_a="no", comment="half done")
    assert r.status_code == 400 and "please answer: Which response is better?" in r.text
    assert 'name="acceptable_a" value="no" data-key="x" checked' in r.text and ">half done</textarea>" in r.text
    assert s.answer("alice", item) is None
    # a flagged item may be left unanswered
    r = post_item(s, alice, item, flags="too_hard", comment="cannot judge")
    assert r.status_code == 303 and s.answer("alice", item).flags == ["too_hard"]


def test_one_raters_token_cannot_read_or_write_anothers_items(study):
    s, tokens = study
    alice, bob = client_for(s, tokens["alice"]), client_for(s, tokens["bob"])
    only_alice = [i for i in my_items(s, "alice") if i not in my_items(s, "bob")]
    shared = [i for i in my_items(s, "alice") if i in my_items(s, "bob")]
    assert only_alice and shared
    assert bob.get(url_of(s, only_alice[0])).status_code == 404
    bob_page = bob.get(url_of(s, my_items(s, 'bob')[0])).text
    r = bob.post(url_of(s, only_alice[0]), data={"csrf": csrf_of(bob_page), "version": "0", **TULU_OK})
    assert r.status_code == 404 and s.answer("bob", only_alice[0]) is None and s.answer("alice", only_alice[0]) is None
    # on a shared item each sees only their own answer
    assert post_item(s, alice, shared[0], **TULU_OK, comment="alice-private-note").status_code == 303
    page = bob.get(url_of(s, shared[0])).text
    assert "alice-private-note" not in page and " checked" not in page and version_of(page) == "0"
    # raters cannot reach the admin pages; the admin token has no items
    assert bob.get("/admin").status_code == 403 and bob.get("/admin/results.json").status_code == 403
    assert bob.get("/admin/export.jsonl").status_code == 403
    admin = client_for(s, tokens["admin"])
    assert admin.get(url_of(s, shared[0])).status_code == 404
    assert admin.get("/admin/results.json").json()["ratings"] == 1


def test_requests_without_a_valid_csrf_token_are_rejected(study):
    s, tokens = study
    alice, bob = client_for(s, tokens["alice"]), client_for(s, tokens["bob"])
    item = my_items(s, "alice")[0]
    assert alice.post(url_of(s, item), data={"version": "0", **TULU_OK}).status_code == 403
    assert alice.post(url_of(s, item), data={"csrf": "0" * 64, "version": "0", **TULU_OK}).status_code == 403
    bobs = csrf_of(bob.get(url_of(s, my_items(s, 'bob')[0])).text)  # a token of another session
    assert alice.post(url_of(s, item), data={"csrf": bobs, "version": "0", **TULU_OK}).status_code == 403
    assert s.answer("alice", item) is None
    admin = client_for(s, tokens["admin"])
    assert admin.post("/admin/close", data={"closed": "1"}).status_code == 403 and not s.is_closed()
    assert alice.post("/logout", data={}).status_code == 403
    fresh = TestClient(create_app(s), follow_redirects=False)
    assert fresh.post("/login", data={"token": tokens["alice"], "csrf": "x"}).status_code == 403
    page = fresh.get("/login").text
    assert fresh.post("/login", data={"token": tokens["alice"], "csrf": csrf_of(page)}).status_code == 303


def test_closed_study_is_read_only(study):
    s, tokens = study
    admin, alice = client_for(s, tokens["admin"]), client_for(s, tokens["alice"])
    item = my_items(s, "alice")[0]
    page = admin.get("/admin").text
    assert admin.post("/admin/close", data={"csrf": csrf_of(page), "closed": "1"}).status_code == 303
    assert s.is_closed()
    view = alice.get(url_of(s, item)).text
    assert "answers are read-only" in view and 'id="submit"' not in view
    r = alice.post(url_of(s, item), data={"csrf": csrf_of(view), "version": "0", **TULU_OK})
    assert r.status_code == 409 and s.answer("alice", item) is None


def test_injection_strings_stored_verbatim_and_xss_inert(tmp_path):
    directory, tokens = make_study(tmp_path, "hhh", n=2, raters=("alice",), a_prompt=XSS + " {i} " + SQLI,
                                   a_answer=XSS + " first", b_prompt=XSS + " {i} " + SQLI, b_answer=SQLI + " {i}")
    s = Study(directory)
    alice, admin = client_for(s, tokens["alice"]), client_for(s, tokens["admin"])
    item = my_items(s, "alice")[0]
    page = alice.get(url_of(s, item))
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "sysa" not in page.text and "sysb" not in page.text  # system names are never shown to raters
    r = post_item(s, alice, item, helpfulness="2", honesty="0", harmlessness="-1", comment=SQLI + XSS)
    assert r.status_code == 303
    saved = s.answer("alice", item)
    assert saved.comment == SQLI + XSS
    assert s.item(item).prompt[0]["content"].endswith(SQLI) and s.history_count() == 1
    again = alice.get(url_of(s, item)).text
    assert "<script>alert" not in again and "Robert&#39;); DROP TABLE answers;--" in again
    results = admin.get("/admin/results.json").json()
    assert results["ratings"] == 1 and results["study"]["system_a"] == "sysa"


def test_xss_in_system_names_is_inert_on_the_admin_page(tmp_path):
    from human_helpers import write_outputs

    from drover.human.create import StudyConfig, create_study

    a, b = write_outputs(tmp_path, 2, "a"), write_outputs(tmp_path, 2, "b")
    out, _, tokens = create_study(StudyConfig(a=str(a), b=str(b), out=str(tmp_path / "st"), raters=["alice"],
                                              name_a="<script>alert(1)</script>", name_b="b<img src=x onerror=1>"))
    s = Study(out)
    page = client_for(s, tokens["admin"]).get("/admin").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    assert summarize(s)["study"]["system_a"] == "<script>alert(1)</script>"


def test_any_item_id_works_in_urls(tmp_path):
    ids = ["a/b c", "x?y#z", "q'\"<>", "ü%20"]
    directory, tokens = make_study(tmp_path, "tulu", n=4, raters=("alice",), a_ids=ids, b_ids=ids)
    s = Study(directory)
    alice = client_for(s, tokens["alice"])
    location = alice.get("/").headers["location"]
    while location != "/done":
        page = alice.get(location)
        assert page.status_code == 200
        r = alice.post(location, data={"csrf": csrf_of(page.text), "version": version_of(page.text), **TULU_OK})
        assert r.status_code == 303
        location = r.headers["location"]
    assert sorted(a.item_id for a in s.all_answers()) == sorted(ids)
    assert "&lt;&gt;" in alice.get(url_of(s, "q'\"<>")).text


@pytest.mark.parametrize("version", ["²", "٣", "1" * 40])
def test_a_damaged_version_field_is_a_400_that_keeps_the_selections(study, version):
    s, tokens = study
    client = client_for(s, tokens["alice"])
    item = my_items(s, "alice")[0]
    page = client.get(url_of(s, item)).text
    r = client.post(url_of(s, item), data={"csrf": csrf_of(page), "version": version, **TULU_OK})
    assert r.status_code == 400 and "damaged" in r.text
    assert 'value="yes" checked' in r.text or "checked" in r.text
    assert s.answer("alice", item) is None


def test_the_done_page_links_back_even_when_the_first_item_is_item_0(tmp_path):
    directory, tokens = make_study(tmp_path, "tulu", n=2, raters=("alice",))
    s = Study(directory)
    try:
        client = client_for(s, tokens["alice"])
        assert s.assignments("alice")[0].item_position == 0
        for item in my_items(s, "alice"):
            assert post_item(s, client, item, **TULU_OK).status_code == 303
        assert 'href="/item/0"' in client.get("/done").text
    finally:
        s.close_engine()


@pytest.mark.parametrize("path", ["/login", "/item/0"])
def test_an_oversized_form_is_refused_before_it_is_read(study, path):
    s, tokens = study
    client = client_for(s, tokens["alice"])
    r = client.post(path, content=b"comment=" + b"x" * (2 * 1024 * 1024),
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    assert s.all_answers() == []


def test_an_invite_link_alone_never_signs_in(study):
    """Login CSRF: a page that makes a rater's browser GET another rater's invite link (an
    <img>, a link) must not switch that browser to the other account. The link fills in the
    form and names the account; only the rater's own POST (with the form's CSRF) signs in."""
    s, tokens = study
    client = TestClient(create_app(s), follow_redirects=False)
    page = client.get("/login", params={"token": tokens["alice"]})
    assert page.status_code == 200 and "signs you in as <strong>alice</strong>" in page.text
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/").headers["location"] == "/login"  # still signed out
    assert client.post("/login", data={"token": tokens["alice"]}).status_code == 403  # no CSRF: refused
    assert SESSION_COOKIE not in client.cookies
    assert client.post("/login", data={"token": tokens["alice"], "csrf": csrf_of(page.text)}).status_code == 303
    assert client.get("/").headers["location"] == url_of(s, my_items(s, "alice")[0])


def test_signing_out_revokes_the_session_and_the_cookie_never_holds_the_invite_token(study):
    """A browser holds a session token of its own: a copy of its cookie (another machine, a
    stolen cookie) stops working when the rater signs out, while the invite token still signs
    the rater in again; two sign-ins are two sessions, and signing out of one keeps the other."""
    s, tokens = study
    alice = client_for(s, tokens["alice"])
    cookie = alice.cookies[SESSION_COOKIE]
    assert cookie and cookie != tokens["alice"]
    item = url_of(s, my_items(s, "alice")[0])
    copy = TestClient(create_app(s), follow_redirects=False)
    copy.cookies.set(SESSION_COOKIE, cookie)
    assert copy.get(item).status_code == 200
    other = client_for(s, tokens["alice"])  # a second browser of the same rater
    assert other.cookies[SESSION_COOKIE] != cookie
    page = alice.get(item).text
    assert alice.post("/logout", data={"csrf": csrf_of(page)}).status_code == 303
    assert copy.get(item).status_code in (303, 404) and copy.get("/").headers["location"] == "/login"
    assert other.get(item).status_code == 200
    planted = TestClient(create_app(s), follow_redirects=False)  # the invite token as a cookie: not a session
    planted.cookies.set(SESSION_COOKIE, tokens["alice"])
    assert planted.get("/").headers["location"] == "/login"
    assert client_for(s, tokens["alice"]).get(item).status_code == 200  # the invite token signs in again


def test_signing_in_again_ends_the_session_the_browser_held(study):
    """A browser that signs in again (another rater on a shared machine, or the same one)
    gets a new session and its old one ends: nobody holds that cookie any more but a copy,
    which kept working for SESSION_DAYS."""
    s, tokens = study
    browser = client_for(s, tokens["alice"])
    item = url_of(s, my_items(s, "alice")[0])
    copy = TestClient(create_app(s), follow_redirects=False)
    copy.cookies.set(SESSION_COOKIE, browser.cookies[SESSION_COOKIE])
    assert copy.get(item).status_code == 200
    page = browser.get("/login", params={"token": tokens["bob"]})
    assert browser.post("/login", data={"token": tokens["bob"], "csrf": csrf_of(page.text)}).status_code == 303
    assert browser.get(url_of(s, my_items(s, "bob")[0])).status_code == 200
    assert copy.get("/").headers["location"] == "/login"
