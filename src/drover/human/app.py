"""The pairwise human-evaluation website (Tülu §4.3, after open-instruct's human_eval app).

One self-contained HTML page (no external JS or CSS): the rater gives a name, then sees
the next instance they have not rated (prompt, responses A and B in a seeded random
order), marks each acceptable or not, picks one of five preference levels and submits.
Every rating is appended to the ratings JSONL at once, so stopping the server loses
nothing and a restart resumes where each rater stopped.
"""

from __future__ import annotations

import html
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from drover.human.instances import Instance, load_instances
from drover.human.ratings import PREFERENCES, RatingStore, make_rating, summarize_ratings

MAX_NAME = 80


@lru_cache(maxsize=None)
def _template(name: str) -> Template:
    return Template(resources.files("drover").joinpath("resources", "human", name).read_text("utf-8"))


def _page(body: str, status: str = "", code: int = 200) -> HTMLResponse:
    return HTMLResponse(_template("page.html").substitute(body=body, status=html.escape(status)), status_code=code)


class HumanEval:
    """State behind the app: the instances, the ratings store and the display seed."""

    def __init__(self, instances: list[Instance], ratings_path: str | Path, seed: int = 0):
        self.instances = instances
        self.by_key = {inst.key: inst for inst in instances}
        self.store = RatingStore(ratings_path)
        self.seed = seed

    def next_for(self, rater: str) -> Instance | None:
        return next((inst for inst in self.instances if not self.store.has(inst.key, rater)), None)

    def shown(self, inst: Instance) -> tuple[str, str, str, str]:
        """(model A, completion A, model B, completion B) as displayed."""
        a, b = inst.shown_order(self.seed)
        return inst.models[a], inst.completions[a], inst.models[b], inst.completions[b]

    def rate_page(self, rater: str, error: str = "", code: int = 200) -> HTMLResponse:
        inst = self.next_for(rater)
        done = self.store.count(rater, self.instances)
        status = f"{rater}: {done} / {len(self.instances)} rated"
        if inst is None:
            body = _template("done.html").substitute(total=len(self.instances), rater=html.escape(rater))
            return _page(body, status, code)
        _, text_a, _, text_b = self.shown(inst)
        options = "\n".join(
            f'<label><input type="radio" name="preference" value="{key}" required> {html.escape(label)}</label>'
            for key, (label, _) in PREFERENCES.items())
        body = _template("rate.html").substitute(
            error=f'<section class="error">{html.escape(error)}</section>' if error else "",
            rater=html.escape(rater, quote=True), instance=html.escape(inst.key, quote=True),
            prompt=html.escape(inst.prompt), completion_a=html.escape(text_a), completion_b=html.escape(text_b),
            preferences=options)
        return _page(body, status, code)

    def record(self, form: dict[str, str]) -> tuple[str, str | None]:
        """Validate a submitted form and store it; returns (rater, error or None)."""
        rater = _clean_name(form.get("rater", ""))
        if not rater:
            return "", "missing rater name"
        inst = self.by_key.get(form.get("instance", ""))
        if inst is None:
            return rater, "unknown instance (the instances file changed?); please rate the one shown"
        answers = {}
        for field in ("acceptable_a", "acceptable_b"):
            value = form.get(field)
            if value not in ("yes", "no"):
                return rater, f"please say whether response {field[-1].upper()} is acceptable"
            answers[field] = value == "yes"
        preference = form.get("preference")
        if preference not in PREFERENCES:
            return rater, "please choose which response is better"
        self.store.add(make_rating(inst, rater, self.seed, answers["acceptable_a"], answers["acceptable_b"],
                                   preference))
        return rater, None


def _clean_name(name: str) -> str:
    return " ".join(name.split())[:MAX_NAME]


def _form(body: bytes) -> dict[str, str]:
    """application/x-www-form-urlencoded or JSON body -> flat dict of strings."""
    text = body.decode("utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return {}
        return {k: ("yes" if v is True else "no" if v is False else str(v)) for k, v in obj.items()
                if isinstance(v, (str, bool, int))}
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def create_app(instances_path: str | Path, ratings_path: str | Path, seed: int = 0) -> FastAPI:
    """The FastAPI app; instances are validated up front (a bad file raises InputError)."""
    state = HumanEval(load_instances(instances_path), ratings_path, seed)
    app = FastAPI(title="drover human evaluation", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.human_eval = state

    @app.get("/", response_class=HTMLResponse)
    def index(rater: str = "") -> Response:
        name = _clean_name(rater)
        if not name:
            return _page(_template("welcome.html").template)
        return state.rate_page(name)

    @app.post("/rate")
    async def rate(request: Request) -> Response:
        form = _form(await request.body())
        rater, error = state.record(form)
        if not rater:
            return _page(_template("welcome.html").template, code=400)
        if error:
            return state.rate_page(rater, error, code=400)
        return RedirectResponse(f"./?rater={quote(rater)}", status_code=303)

    @app.get("/api/next")
    def api_next(rater: str) -> JSONResponse:
        name = _clean_name(rater)
        inst = state.next_for(name) if name else None
        payload: dict[str, Any] = {"rater": name, "rated": state.store.count(name, state.instances),
                                   "total": len(state.instances), "instance": None}
        if inst is not None:
            _, text_a, _, text_b = state.shown(inst)
            payload["instance"] = {"key": inst.key, "id": inst.id, "prompt": inst.prompt,
                                   "completion_a": text_a, "completion_b": text_b}
        return JSONResponse(payload)

    @app.post("/api/ratings")
    async def api_rate(request: Request) -> JSONResponse:
        rater, error = state.record(_form(await request.body()))
        if error or not rater:
            return JSONResponse({"error": error or "missing rater name"}, status_code=400)
        return JSONResponse({"ok": True, "rated": state.store.count(rater, state.instances)})

    @app.get("/api/summary")
    def api_summary() -> JSONResponse:
        if not state.store.path.exists() or state.store.path.stat().st_size == 0:
            return JSONResponse({"ratings": 0})
        return JSONResponse(summarize_ratings(state.store.path))

    return app
