"""Headless Chromium (Debian's, through Playwright) drives the rating website: two raters
complete a small study in each form — one with the keyboard on a desktop, one by tapping
on a phone-sized screen — and the stored answers and the results match what they clicked.

Set DROVER_HUMAN_SCREENSHOT=docs/human-eval.png to refresh the README's screenshot.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest
from human_helpers import LiveServer, chromium_path, make_study

from drover.human.forms import load_form
from drover.human.store import Study
from drover.human.summary import summarize

XSS = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=1</script>"
PROMPT = "Write a function that adds two numbers. " + XSS + " #{i}"
ANSWER_A = "Here it is:\n```python\ndef add(a, b):\n    return a + b  # <b>not bold</b>\n```\nCall add(2, 3) to get 5."
ANSWER_B = "Sure.\n```python\nadd = lambda a, b: a + b\n```"


def _choices(form_name: str, rng: random.Random) -> dict[str, str]:
    form = load_form(form_name)
    return {q.name: rng.choice(form.options(q))[0] for q in form.questions}


def _rate_all(page, server: LiveServer, token: str, form_name: str, keyboard: bool, rng: random.Random,
              clicked: dict[str, dict[str, str]], screenshot: Path | None) -> None:
    form = load_form(form_name)
    page.goto(f"{server.url}/login?token={token}")
    with page.expect_navigation():
        page.click("#sign-in")  # the invite link fills in the form; signing in is the rater's click
    first, shots = True, 0
    while "/item/" in page.url:
        item = page.inner_text("#item-id")
        assert page.evaluate("window.__xss") is None
        choice = _choices(form_name, rng)
        if first:  # a rejected submit (one question left out) keeps the other selections
            partial = dict(list(choice.items())[:-1])
            _select(page, form, partial, keyboard)
            with page.expect_navigation():
                page.click("#submit")
            assert "please answer" in page.inner_text("#errors")
            for name, value in partial.items():
                assert page.is_checked(f'input[name="{name}"][value="{value}"]')
            first = False
        else:
            shots += 1
        _select(page, form, choice, keyboard)
        if screenshot is not None and shots == 1:  # the second item: a clean page, no error box
            page.screenshot(path=str(screenshot), full_page=True)
        clicked[item] = choice
        with page.expect_navigation():
            if keyboard:
                page.keyboard.press("Control+Enter")
            else:
                page.click("#submit")
    assert page.url.endswith("/done")


def _select(page, form, choice: dict[str, str], keyboard: bool) -> None:
    for q in form.questions:
        if q.name not in choice:
            continue
        value = choice[q.name]
        if keyboard:
            key = next(k for v, _, k in form.options(q) if v == value)
            page.keyboard.press(key)
        else:
            page.click(f'input[name="{q.name}"][value="{value}"]')
        assert page.is_checked(f'input[name="{q.name}"][value="{value}"]')


@pytest.mark.slow
@pytest.mark.parametrize("form_name", ["tulu", "hhh"])
def test_two_raters_complete_a_study_in_chromium(tmp_path, form_name):
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    directory, tokens = make_study(tmp_path, form_name, n=3, raters=("alice", "bob"), overlap=3,
                                   a_prompt=PROMPT, b_prompt=PROMPT, a_answer=ANSWER_A, b_answer=ANSWER_B)
    server = LiveServer(directory).start()
    shot_env = os.environ.get("DROVER_HUMAN_SCREENSHOT")
    clicked: dict[str, dict[str, dict[str, str]]] = {"alice": {}, "bob": {}}
    dialogs: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
            desktop = browser.new_context(viewport={"width": 1280, "height": 900})
            phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            alice, bob = desktop.new_page(), phone.new_page()
            for page in (alice, bob):
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            shot = Path(shot_env) if shot_env and form_name == "tulu" else tmp_path / f"{form_name}.png"
            _rate_all(alice, server, tokens["alice"], form_name, True, random.Random(1), clicked["alice"], shot)
            assert shot.stat().st_size > 10_000
            _rate_all(bob, server, tokens["bob"], form_name, False, random.Random(2), clicked["bob"], None)
            # usable on a phone: nothing wider than the screen, code in a monospace font, escaped
            bob.goto(f"{server.url}/item/0")  # q0
            assert bob.evaluate("document.documentElement.scrollWidth") <= 390
            assert "mono" in bob.eval_on_selector("pre.code", "e => getComputedStyle(e).fontFamily").lower()
            assert "<b>not bold</b>" in bob.inner_text(".pair") and bob.locator(".pair b, main img").count() == 0
            # alice goes back with "[" and edits her last answer: an explicit edit, kept in the history
            alice.goto(f"{server.url}/item/2")  # q2
            alice.keyboard.press("[")
            alice.wait_for_url("**/item/1")
            q = load_form(form_name).preference_questions[0]
            new = next(v for v, _, _ in load_form(form_name).options(q) if v != clicked["alice"]["q1"][q.name])
            alice.click(f'input[name="{q.name}"][value="{new}"]')
            assert "Save edit" in alice.inner_text("#submit")
            with alice.expect_navigation():
                alice.click("#submit")
            clicked["alice"]["q1"] = {**clicked["alice"]["q1"], q.name: new}
            browser.close()
    finally:
        server.stop()
    assert dialogs == []
    study = Study(directory)
    form = load_form(form_name)
    expected = {}
    for rater, items in clicked.items():
        assert sorted(items) == ["q0", "q1", "q2"]
        swaps = {a.item_id: a.swapped for a in study.assignments(rater)}
        for item, choice in items.items():
            canonical, problems = form.parse(choice, swaps[item], required=True)
            assert not problems
            expected[(rater, item)] = canonical
    saved = {(a.rater, a.item_id): a for a in study.all_answers()}
    assert {k: a.answers for k, a in saved.items()} == expected
    assert [h.version for h in study.history("alice", "q1")] == [1, 2]
    # the results say what was clicked: counted here independently of summary.py
    summary = summarize(study)
    for q in form.preference_questions:
        signs = Counter((v[q.name] > 0) - (v[q.name] < 0) for v in expected.values())
        assert summary["questions"][q.name]["pooled"]["counts"] == {"win": signs[1], "tie": signs[0],
                                                                   "loss": signs[-1]}
        per_item = [[expected[(r, i)][q.name] for r in ("alice", "bob")] for i in ("q0", "q1", "q2")]
        wins = sum(sum(s > 0 for s in scores) / 2 for scores in per_item) / 3
        assert summary["questions"][q.name]["pooled"]["win"] == pytest.approx(wins)
    if form.acceptable_questions:
        rate_a = sum(v["acceptable_a"] for v in expected.values()) / len(expected)
        assert summary["acceptance"]["a"]["rate"] == pytest.approx(rate_a)
