"""/hub/admin/roster: an administrator imports a class list from the browser, when
auth.manage_accounts is on. Upload a CSV, see who will be created, confirm, then see the
initial passwords once; the accounts are made as `notebook-appliance roster import` makes them.
"""

import asyncio
import logging

from aiohttp import web

from appliance import accounthelper, roster
from appliance.adminpages import TURNED_OFF, require_admin
from appliance.errors import BadRequest, Forbidden
from appliance.pages import checked_form, render

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    """Register the roster routes."""
    app.router.add_post("/hub/admin/roster", upload)
    app.router.add_post("/hub/admin/roster/create", create)


async def require_manager(request: web.Request):
    """The logged-in admin, when auth.manage_accounts is on; Forbidden in words otherwise."""
    identity = await require_admin(request)
    if not request.app["config"].auth.manage_accounts:
        raise Forbidden(f"{identity.name}: auth.manage_accounts is off", user_message=TURNED_OFF)
    return identity


async def uploaded_text(form) -> str:
    """The uploaded CSV file's text (UTF-8, a BOM allowed); BadRequest without one."""
    field = form.get("roster")
    if field is None or not hasattr(field, "file"):
        raise BadRequest("no roster file", user_message="Please choose a CSV file to import.")
    # The body is already read; the file part may sit in a temporary file: read it off the loop.
    data = await asyncio.get_running_loop().run_in_executor(None, field.file.read)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("roster not UTF-8",
                         user_message="The file is not UTF-8 text; save it as CSV UTF-8.") from None


async def plan(text: str) -> tuple[list[roster.Entry], list[str]]:
    """roster.plan_sync off the loop (NSS lookups)."""
    return await asyncio.get_running_loop().run_in_executor(None, roster.plan_sync, text)


async def upload(request: web.Request) -> web.Response:
    """POST /hub/admin/roster (multipart): the file checked, then who would be created."""
    await require_manager(request)
    text = await uploaded_text(await checked_form(request))
    try:
        missing, existing = await plan(text)
    except roster.RosterError as e:
        return render(request, "roster.html", status=400, step="error",
                      problems=e.problems, created=[], missing=[], existing=[], text="")
    return render(request, "roster.html", step="confirm", missing=missing, existing=existing,
                  text=text, problems=[], created=[])


async def create(request: web.Request) -> web.Response:
    """POST /hub/admin/roster/create: checked again, the accounts made, passwords shown once."""
    identity = await require_manager(request)
    form = await checked_form(request)
    text = str(form.get("text", ""))
    problems, made = [], []
    try:
        made = await (by_helper(text) if accounthelper.needed() else by_hub(text))
    except roster.RosterError as e:
        problems, made = e.problems, e.created
    log.info("roster: admin %r imported %d account(s)%s", identity.name, len(made),
             f"; stopped: {problems[0]}" if problems else "")
    return render(request, "roster.html", status=400 if problems else 200, step="created",
                  created=made, problems=problems, missing=[], existing=[], text="")


async def by_hub(text: str) -> list[roster.Created]:
    """Make the missing accounts here (a hub that may write /etc)."""
    missing, _ = await plan(text)
    return await roster.create_all(missing)


async def by_helper(text: str) -> list[roster.Created]:
    """Have the account helper make them (the installed hub's /etc is read-only to it);
    RosterError with its problems and what it made before them."""
    try:
        answer = await accounthelper.call({"op": "create-accounts", "roster": text})
    except accounthelper.HelperError as e:
        log.error("roster: %s", e)
        raise roster.RosterError([HELPER_DOWN]) from e
    made = [roster.Created(str(c["name"]), str(c["password"])) for c in answer["created"]]
    if answer["problems"]:
        raise roster.RosterError([str(p) for p in answer["problems"]], made)
    return made


#: Shown when the installed hub's account helper cannot be reached.
HELPER_DOWN = ("The hub's account helper is not answering, so no account was made. Import the "
               "roster as root instead (notebook-appliance roster import FILE.csv), and see "
               "`systemctl status notebook-appliance-accounts.socket`.")
