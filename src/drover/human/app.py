"""The rating website: FastAPI, server-rendered Jinja2 pages from resources/human/templates.

Who may do what:
- a rater signs in with an invite token (a link `/login?token=...` fills in the login form,
  which the rater submits; a GET never signs in), or by pasting it. The browser then holds a
  session token of its own in an HttpOnly cookie, never the invite token, and signing out
  deletes that session on the server: a copied cookie stops working. A rater can open and answer only the items assigned to
  them: any other item id is a 404, whoever's it is.
- the admin token opens `/admin`: progress, results (JSON/CSV), the `Ranked` export, and
  closing the study (after which answers are read-only).
- every POST carries a CSRF token bound to the session (tokens.py); a missing or wrong one
  is a 403 and changes nothing.

Pages never show system names to raters; which system is "A" is looked up per
(rater, item) on the server. All text is escaped by Jinja2's autoescape and the pages are
served with a Content-Security-Policy that allows only this site's own script and style.
"""

from __future__ import annotations

import secrets
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment, FunctionLoader, select_autoescape

from drover.human.forms import FLAGS
from drover.human.render import segments
from drover.human.store import SESSION_DAYS, Assignment, Rater, SaveConflict, Study, StudyClosed
from drover.human.tokens import csrf_ok, csrf_token, hash_token

SESSION_COOKIE = "drover_human_session"
PRE_COOKIE = "drover_human_pre"
MAX_COMMENT = 4000
MAX_FORM_BYTES = 256 * 1024  # a full item form with a MAX_COMMENT comment is a few KiB
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
STATIC = {"human.js": "text/javascript; charset=utf-8", "human.css": "text/css; charset=utf-8"}


def _resource(*parts: str) -> str:
    return resources.files("drover").joinpath("resources", "human", *parts).read_text("utf-8")


_env = Environment(loader=FunctionLoader(lambda name: _resource("templates", name)),
                   autoescape=select_autoescape(default=True, default_for_string=True))


async def _form_fields(request: Request) -> dict[str, list[str]]:
    """An application/x-www-form-urlencoded body (repeated keys kept, e.g. flags), read up to
    MAX_FORM_BYTES: /login takes POSTs from anyone, so an unbounded body is a memory attack."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise HTTPException(413, f"a form is at most {MAX_FORM_BYTES} bytes")
        chunks.append(chunk)
    return parse_qs(b"".join(chunks).decode("utf-8", errors="replace"), keep_blank_values=True)


class Pages:
    """Renders pages and applies submissions for one open study."""

    def __init__(self, study: Study):
        self.study = study

    def html(self, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        body = _env.get_template(template).render(form=self.study.form, **context)
        return HTMLResponse(body, status_code=code)

    def message(self, text: str, code: int, rater: Rater | None = None) -> HTMLResponse:
        return self.html("message.html", code, text=text, rater=rater, csrf="")

    # ---- rater pages ------------------------------------------------------------------------------------------
    def item_page(self, rater: Rater, session: str, assignment: Assignment, code: int = 200,
                  submitted: dict[str, list[str]] | None = None, errors: list[str] | None = None) -> HTMLResponse:
        study = self.study
        item = study.item(assignment.item_id)
        plan = study.assignments(rater.name)
        answered = study.answered(rater.name)
        saved = study.answer(rater.name, item.id)
        shown = (item.output_b, item.output_a) if assignment.swapped else (item.output_a, item.output_b)
        if submitted is not None:      # a rejected submit: show exactly what was sent
            selected = {q.name: _one(submitted, q.name) for q in study.form.questions}
            comment = _one(submitted, "comment")
            flags = set(submitted.get("flags") or [])
            version = _version(_one(submitted, "version")) or 0
        elif saved is not None:
            selected = study.form.to_display(saved.answers, assignment.swapped)
            comment, flags, version = saved.comment, set(saved.flags), saved.version
        else:
            selected, comment, flags, version = {}, "", set(), 0
        index = assignment.position
        return self.html(
            "item.html", code, rater=rater, csrf=csrf_token(study.secret, session), item=item,
            turns=[(m["role"], segments(m["content"])) for m in item.prompt],
            output_a=segments(shown[0]), output_b=segments(shown[1]), selected=selected, comment=comment,
            flags=flags, flag_labels=FLAGS, version=version, saved=saved, errors=errors or [],
            position=index + 1, total=len(plan), answered=len(answered),
            prev_pos=plan[index - 1].item_position if index > 0 else None,
            next_pos=plan[index + 1].item_position if index + 1 < len(plan) else None,
            closed=study.is_closed())

    def next_url(self, rater: Rater, position: int) -> str:
        """The page of the next unanswered item after `position` (wrapping), or /done."""
        plan = self.study.assignments(rater.name)
        answered = self.study.answered(rater.name)
        for a in plan[position + 1:] + plan[:position + 1]:
            if a.item_id not in answered:
                return f"/item/{a.item_position}"
        return "/done"

    def submit(self, rater: Rater, session: str, assignment: Assignment, fields: dict[str, list[str]]) -> Response:
        study = self.study
        flags = [f for f in fields.get("flags", []) if f in FLAGS]
        unknown = [f for f in fields.get("flags", []) if f not in FLAGS]
        one = {k: v[-1] for k, v in fields.items()}
        answers, problems = study.form.parse(one, assignment.swapped, required=not flags)
        if unknown:
            problems.append(f"unknown flag {unknown[0]!r}")
        comment = one.get("comment", "")
        if len(comment) > MAX_COMMENT:
            problems.append(f"the comment is longer than {MAX_COMMENT} characters")
        version = _version(one.get("version", "0"))
        if version is None:
            version, problems = 0, problems + ["the page is damaged (version); reload it"]
        if problems:
            return self.item_page(rater, session, assignment, 400, fields, problems)
        try:
            study.save(rater.name, assignment.item_id, version, answers, comment, flags)
        except StudyClosed:
            return self.item_page(rater, session, assignment, 409, fields,
                                  ["the study is closed: answers can no longer be changed"])
        except SaveConflict as exc:
            fields["version"] = [str(exc.current)]  # the kept form now edits the version that was saved
            return self.item_page(rater, session, assignment, 409, fields, [
                f"this answer was saved meanwhile (version {exc.current}, e.g. from another tab); your selections "
                "are kept below: reload the item to see the saved answer, or submit again to replace it"])
        return RedirectResponse(self.next_url(rater, assignment.position), status_code=303)


def _version(raw: str) -> int | None:
    """The page's answer version: ASCII digits only ("²".isdigit() is true, int("²") raises)."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def _one(fields: dict[str, list[str]], name: str, default: str = "") -> str:
    """The last value of a form field (a repeated field counts once, as a browser sends it)."""
    return (fields.get(name) or [default])[-1]


class Routes:
    """The HTTP handlers; `create_app` wires them to paths (one table, no nested closures)."""

    def __init__(self, study: Study):
        self.study = study
        self.pages = Pages(study)

    # ---- sessions ---------------------------------------------------------------------------------------------
    def who(self, request: Request) -> tuple[Rater | None, str]:
        """The signed-in rater (or None) and the session id their CSRF tokens are bound to."""
        token = request.cookies.get(SESSION_COOKIE, "")
        rater = self.study.rater_for_session(token)
        return rater, hash_token(token) if rater else ""

    def admin_of(self, request: Request) -> tuple[Rater | None, str]:
        rater, session = self.who(request)
        return (rater, session) if rater is not None and rater.role == "admin" else (None, "")

    def csrf_valid(self, session: str, fields: dict[str, list[str]]) -> bool:
        return csrf_ok(self.study.secret, session, _one(fields, "csrf"))

    def sign_in(self, request: Request, token: str) -> Response:
        token = token.strip()
        rater = self.study.rater_for_token(token)
        if rater is None:
            csrf = csrf_token(self.study.secret, "pre:" + request.cookies.get(PRE_COOKIE, ""))
            return self.pages.html("login.html", 403, error="unknown invite token", csrf=csrf, rater=None)
        if request.cookies.get(SESSION_COOKIE):  # the browser's previous sign-in ends: only copies still held it
            self.study.close_session(request.cookies[SESSION_COOKIE])
        response = RedirectResponse("/admin" if rater.role == "admin" else "/", status_code=303)
        response.set_cookie(SESSION_COOKIE, self.study.open_session(rater.name), httponly=True, samesite="lax",
                            secure=request.url.scheme == "https", max_age=SESSION_DAYS * 86400)
        return response

    def assignment_of(self, rater: Rater, item: int) -> Assignment | None:
        """The rater's assignment of the study's item number `item`; None for anyone else's."""
        if rater.role != "rater":
            return None
        return next((a for a in self.study.assignments(rater.name) if a.item_position == item), None)

    # ---- handlers ---------------------------------------------------------------------------------------------
    def static(self, name: str) -> Response:
        if name not in STATIC:
            return PlainTextResponse("not found", status_code=404)
        return Response(_resource("static", name), media_type=STATIC[name])

    def login_page(self, request: Request, token: str = "") -> Response:
        """The sign-in form; an invite link (`?token=`) fills it in and names whom it signs in,
        but never signs in by itself: a GET any page can trigger (an <img>, a link) must not
        switch a rater's browser to another account (login CSRF), so the rater presses the button."""
        invited = self.study.rater_for_token(token.strip()) if token else None
        nonce = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(16)
        response = self.pages.html("login.html", 403 if token and invited is None else 200,
                                   error="unknown invite token" if token and invited is None else "",
                                   csrf=csrf_token(self.study.secret, "pre:" + nonce), rater=None,
                                   invited=invited.name if invited else "", token=token.strip() if invited else "")
        response.set_cookie(PRE_COOKIE, nonce, httponly=True, samesite="strict")
        return response

    async def login(self, request: Request) -> Response:
        fields = await _form_fields(request)
        nonce = request.cookies.get(PRE_COOKIE, "")
        if not nonce or not self.csrf_valid("pre:" + nonce, fields):
            return self.pages.message("invalid or missing CSRF token: reload the sign-in page and try again", 403)
        return self.sign_in(request, _one(fields, "token"))

    async def logout(self, request: Request) -> Response:
        rater, session = self.who(request)
        if rater is None or not self.csrf_valid(session, await _form_fields(request)):
            return self.pages.message("invalid or missing CSRF token", 403)
        self.study.close_session(request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    def home(self, request: Request) -> Response:
        rater, _ = self.who(request)
        if rater is None:
            return RedirectResponse("/login", status_code=303)
        if rater.role == "admin":
            return RedirectResponse("/admin", status_code=303)
        return RedirectResponse(self.pages.next_url(rater, -1), status_code=303)

    def item_get(self, request: Request, item: int) -> Response:
        rater, session = self.who(request)
        if rater is None:
            return RedirectResponse("/login", status_code=303)
        assignment = self.assignment_of(rater, item)
        if assignment is None:
            return self.pages.message("no such item among yours", 404, rater)
        return self.pages.item_page(rater, session, assignment)

    async def item_post(self, request: Request, item: int) -> Response:
        rater, session = self.who(request)
        fields = await _form_fields(request)
        if rater is None:
            return self.pages.message("not signed in: open your invite link again", 401)
        if not self.csrf_valid(session, fields):
            return self.pages.message("invalid or missing CSRF token: reload the page and submit again", 403, rater)
        assignment = self.assignment_of(rater, item)
        if assignment is None:
            return self.pages.message("no such item among yours", 404, rater)
        return self.pages.submit(rater, session, assignment, fields)

    def done(self, request: Request) -> Response:
        rater, session = self.who(request)
        if rater is None:
            return RedirectResponse("/login", status_code=303)
        plan = self.study.assignments(rater.name)
        return self.pages.html("done.html", rater=rater, csrf=csrf_token(self.study.secret, session),
                               total=len(plan), answered=len(self.study.answered(rater.name)),
                               first=plan[0].item_position if plan else None)

    def admin(self, request: Request) -> Response:
        rater, session = self.admin_of(request)
        if rater is None:
            return self.pages.message("the admin page needs the admin token", 403)
        study = self.study
        return self.pages.html("admin.html", rater=rater, csrf=csrf_token(study.secret, session),
                               progress=study.progress(), closed=study.is_closed(), items=len(study.items()),
                               name_a=study.name_a, name_b=study.name_b)

    async def admin_close(self, request: Request) -> Response:
        rater, session = self.admin_of(request)
        fields = await _form_fields(request)
        if rater is None or not self.csrf_valid(session, fields):
            return self.pages.message("invalid or missing CSRF token, or not the admin", 403)
        self.study.set_closed(_one(fields, "closed", "1") == "1")
        return RedirectResponse("/admin", status_code=303)

    def admin_results(self, request: Request, fmt: str) -> Response:
        from drover.human.summary import summarize, to_csv, to_json

        if self.admin_of(request)[0] is None:
            return self.pages.message("results need the admin token", 403)
        if fmt not in ("json", "csv"):
            return PlainTextResponse("results.json or results.csv", status_code=404)
        summary = summarize(self.study)
        if fmt == "json":
            return Response(to_json(summary), media_type="application/json")
        return Response(to_csv(summary), media_type="text/csv; charset=utf-8")

    def admin_export(self, request: Request) -> Response:
        from drover.human.export import ranked_lines

        if self.admin_of(request)[0] is None:
            return self.pages.message("the export needs the admin token", 403)
        return Response(ranked_lines(self.study), media_type="application/x-ndjson; charset=utf-8")


async def _security_headers(request: Request, call_next: Any) -> Response:
    response = await call_next(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # invite tokens must not leak through links
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


def create_app(study: Study) -> FastAPI:
    """The FastAPI app over an open study."""
    routes = Routes(study)
    app = FastAPI(title="drover human evaluation", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.study = study
    app.middleware("http")(_security_headers)
    table: list[tuple[str, str, Any]] = [
        ("GET", "/static/{name}", routes.static),
        ("GET", "/login", routes.login_page),
        ("POST", "/login", routes.login),
        ("POST", "/logout", routes.logout),
        ("GET", "/", routes.home),
        ("GET", "/item/{item}", routes.item_get),
        ("POST", "/item/{item}", routes.item_post),
        ("GET", "/done", routes.done),
        ("GET", "/admin", routes.admin),
        ("POST", "/admin/close", routes.admin_close),
        ("GET", "/admin/results.{fmt}", routes.admin_results),
        ("GET", "/admin/export.jsonl", routes.admin_export),
    ]
    for method, path, handler in table:
        app.add_api_route(path, handler, methods=[method])
    return app
