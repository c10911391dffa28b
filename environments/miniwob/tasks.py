"""Which MiniWoB++ tasks are offered, their seed splits, and the scripted solvers.

Selected: tasks a text agent can solve from the instruction and the element
snapshot alone (click, type, select, check). Left out:

- canvas, drag and vision-only tasks (bisect-angle, circle-center, chase-circle,
  click-color, click-pie, click-shades, click-shape, count-shape, count-sides,
  drag-*, draw-*, find-midpoint, grid-coordinate, highlight-text*, identify-shape,
  right-angle, visual-addition, use-colorwheel*, moving-items, simon-says,
  tic-tac-toe): their state is drawn in SVG or canvas, or they need pointer
  drags and coordinates, which the id-based actions do not offer;
- timing-dependent ones (button-delay, the non-``nodelay`` animated variants,
  hot-cold, click-scroll-list): they depend on real time, not on the seed alone;
- the long multi-page tasks (book-flight, email-inbox*, social-media*, search-engine,
  terminal, text-editor …): playable but far beyond scripted baselines; they can be
  added to `TASKS` as they are.

A task instance is set by its seed (``Math.seedrandom``): task id ``"17"`` is seed 17.
Train and test seeds are disjoint ranges.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from archer_agents.environments.registration import MINIWOB_TASKS
from archer_agents.tools.browser.session import PageSnapshot

TASKS = MINIWOB_TASKS
"""The registered tasks (``archer/miniwob.<task>-v0``), listed in `registration`."""

TRAIN_SEEDS = range(0, 1000)
TEST_SEEDS = range(100_000, 100_200)

Plan = list[str]
Solver = Callable[[str, PageSnapshot], Plan]


def _quoted(instruction: str) -> list[str]:
    return re.findall(r'"([^"]*)"', instruction)


def _submit(snapshot: PageSnapshot) -> str:
    for element in snapshot.find("button"):
        if element.name.lower() == "submit":
            return f'click("{element.element_id}")'
    return 'press("Enter")'


def _click_button(instruction: str, snapshot: PageSnapshot) -> Plan:
    wanted = _quoted(instruction)[0]
    button = snapshot.find("button", wanted)[0]
    return [f'click("{button.element_id}")']


def _click_link(instruction: str, snapshot: PageSnapshot) -> Plan:
    wanted = _quoted(instruction)[0]
    element = next(e for e in snapshot.elements if e.name == wanted and e.role != "text")
    return [f'click("{element.element_id}")']


def _enter_text(instruction: str, snapshot: PageSnapshot) -> Plan:
    text = _quoted(instruction)[0]
    box = snapshot.find("textbox")[0]
    return [f"fill({box.element_id!r}, {text!r})", _submit(snapshot)]


def _focus_text(instruction: str, snapshot: PageSnapshot) -> Plan:
    return [f'click("{snapshot.find("textbox")[0].element_id}")']


def _click_checkboxes(instruction: str, snapshot: PageSnapshot) -> Plan:
    match = re.match(r"Select (.*) and click Submit", instruction)
    listed = match.group(1) if match else ""
    wanted = set() if listed == "nothing" else {w.strip() for w in listed.split(",")}
    clicks = [
        f'click("{box.element_id}")'
        for box in snapshot.find("checkbox")
        if (box.name in wanted) != bool(box.checked)
    ]
    return [*clicks, _submit(snapshot)]


def _click_option(instruction: str, snapshot: PageSnapshot) -> Plan:
    match = re.match(r"Select (.*) and click Submit", instruction)
    wanted = match.group(1) if match else ""
    radio = snapshot.find("radio", wanted)[0]
    return [f'click("{radio.element_id}")', _submit(snapshot)]


def _login_user(instruction: str, snapshot: PageSnapshot) -> Plan:
    username, password = _quoted(instruction)[:2]
    boxes = snapshot.find("textbox")
    user = next(b for b in boxes if b.type != "password")
    secret = next(b for b in boxes if b.type == "password")
    login = next(b for b in snapshot.find("button") if b.name.lower() == "login")
    return [
        f"fill({user.element_id!r}, {username!r})",
        f"fill({secret.element_id!r}, {password!r})",
        f'click("{login.element_id}")',
    ]


def _enter_password(instruction: str, snapshot: PageSnapshot) -> Plan:
    password = _quoted(instruction)[0]
    fills = [f"fill({b.element_id!r}, {password!r})" for b in snapshot.find("textbox")]
    return [*fills, _submit(snapshot)]


def _choose_list(instruction: str, snapshot: PageSnapshot) -> Plan:
    match = re.match(r"Select (.*) from the list and click Submit", instruction)
    wanted = match.group(1) if match else ""
    box = snapshot.find("combobox")[0]
    return [f"select_option({box.element_id!r}, {wanted!r})", _submit(snapshot)]


def _click_dialog(instruction: str, snapshot: PageSnapshot) -> Plan:
    close = snapshot.find("button", "Close")[0]
    return [f'click("{close.element_id}")']


SOLVERS: dict[str, Solver] = {
    "click-button": _click_button,
    "click-link": _click_link,
    "enter-text": _enter_text,
    "focus-text": _focus_text,
    "click-checkboxes": _click_checkboxes,
    "click-option": _click_option,
    "login-user": _login_user,
    "enter-password": _enter_password,
    "choose-list": _choose_list,
    "click-dialog": _click_dialog,
}
"""Scripted experts: instruction and first snapshot in, the whole action plan out."""
