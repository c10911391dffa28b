"""A browser task file (YAML or JSON), read into a pydantic model.

A task file says where the episode starts, which origins the browser may
reach, what to ask the agent, how to tell that it succeeded and how many steps
it gets. It may also name a folder of static pages to serve on 127.0.0.1 (so
the task ships its own site) and a scripted solution (steps that find their
element by role and name, so they survive changing element ids), which gives
the task an ``expert`` agent for tests and behaviour-cloning data::

    name: contact-form
    instruction: Send the contact form as Ada Lovelace (ada@example.org), topic Billing.
    site: ../test_site             # served on http://127.0.0.1:<free port>
    start_url: /form.html          # a path on the site, or an absolute http(s) URL
    allowed_origins: []            # the start URL's origin is always allowed
    success:                       # exactly one of the four checks
      url_matches: "thanks\\.html" # a regular expression searched in the URL
      # text_present: "Thank you"  # text somewhere on the page
      # selector: "#done"          # a CSS selector and its state
      # state: visible             # visible hidden attached detached checked unchecked
      #                            # enabled disabled
      # javascript: "() => window.sent === true"   # truthy = success
    max_steps: 10
    solution:
      - {action: fill, role: textbox, name: Name, text: Ada Lovelace}
      - {action: click, role: button, name: Send}

A bad file is reported as one line naming the file and the field
(`TaskFileError`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TASK_FILE_SUFFIXES = (".yaml", ".yml", ".json")
SELECTOR_STATES = (
    "visible",
    "hidden",
    "attached",
    "detached",
    "checked",
    "unchecked",
    "enabled",
    "disabled",
)
ACTIONS = ("click", "fill", "select_option", "press", "scroll", "go_back", "goto", "read_text")


class TaskFileError(ValueError):
    """A task file that cannot be used; the message is one line naming the problem."""


def is_task_file(text: str) -> bool:
    """Whether ``text`` names a task file (by its suffix) rather than an environment id."""
    return text.lower().endswith(TASK_FILE_SUFFIXES)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class SuccessCheck(BaseModel):
    """When the episode is won; exactly one check is given."""

    model_config = ConfigDict(extra="forbid")

    url_matches: str | None = None
    """A regular expression searched (``re.search``) in the page's URL."""
    text_present: str | None = None
    """Text that appears in the page's visible text."""
    selector: str | None = None
    """A CSS selector whose first match must be in ``state``."""
    state: Literal[
        "visible", "hidden", "attached", "detached", "checked", "unchecked", "enabled", "disabled"
    ] = "visible"
    javascript: str | None = None
    """A JavaScript expression or function run in the page; a truthy result is success."""

    @model_validator(mode="after")
    def _one_check(self) -> SuccessCheck:
        given = [
            name
            for name in ("url_matches", "text_present", "selector", "javascript")
            if getattr(self, name) not in (None, "")
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of url_matches, text_present, selector, javascript"
                f" (got {', '.join(given) or 'none'})"
            )
        if "state" in self.model_fields_set and self.selector is None:
            raise ValueError("state goes with selector")
        if self.url_matches is not None:
            try:
                re.compile(self.url_matches)
            except re.error as exc:
                raise ValueError(f"url_matches is not a regular expression: {exc}") from None
        return self

    @property
    def kind(self) -> str:
        for name in ("url_matches", "text_present", "selector", "javascript"):
            if getattr(self, name) not in (None, ""):
                return name
        raise AssertionError("validated to have one check")


class SolutionStep(BaseModel):
    """One step of a scripted solution; its element is found by role and name."""

    model_config = ConfigDict(extra="forbid")

    action: Literal[
        "click", "fill", "select_option", "press", "scroll", "go_back", "goto", "read_text"
    ]
    role: str | None = None
    name: str | None = None
    """The element's name exactly as the page listing shows it."""
    text: str = ""
    """What to type (fill), the option (select_option), the key (press) or the URL (goto)."""
    dx: int = 0
    dy: int = 0

    @model_validator(mode="after")
    def _target(self) -> SolutionStep:
        needs_element = self.action in ("click", "fill", "select_option")
        if needs_element and self.role is None and self.name is None:
            raise ValueError(f"a {self.action} step needs the element's role and/or name")
        return self


class BrowserTask(BaseModel):
    """A browser task: where it starts, what is allowed, what to do, when it is won."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    instruction: str = Field(min_length=1)
    start_url: str = Field(min_length=1)
    """An absolute http(s) URL, or a path on ``site`` (``/form.html``) when one is served."""
    site: str | None = None
    """A folder of static pages served on 127.0.0.1 (relative to the task file)."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Origins (``http://host:port``) the browser may reach besides the start URL's."""
    success: SuccessCheck
    max_steps: int = Field(default=10, ge=1, le=1000)
    solution: list[SolutionStep] = Field(default_factory=list)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
                raise ValueError(f"an origin looks like http://127.0.0.1:8000, not {origin!r}")
        return [origin.rstrip("/") for origin in origins]

    @model_validator(mode="after")
    def _start(self) -> BrowserTask:
        scheme = urlsplit(self.start_url).scheme
        if self.site is not None:
            if scheme:
                raise ValueError(
                    "with site, start_url is a path on it (like /index.html), not "
                    f"{self.start_url!r}"
                )
        elif scheme not in ("http", "https") or not urlsplit(self.start_url).hostname:
            raise ValueError(
                f"start_url must be an http(s) URL (or a path, with site), not {self.start_url!r}"
            )
        return self

    def resolve_site(self, base: Path) -> Path | None:
        """The served folder, relative to the task file's folder ``base``."""
        if self.site is None:
            return None
        return (base / self.site).resolve()

    def origins(self, site_origin: str | None = None) -> list[str]:
        """Every allowed origin: the start URL's (or the served site's) first."""
        first = site_origin if self.site is not None else origin_of(self.start_url)
        if first is None:
            raise ValueError("the task serves a site: give the origin it is served on")
        return [first, *(o for o in self.allowed_origins if o != first)]

    def url(self, site_origin: str | None = None) -> str:
        """The absolute start URL."""
        if self.site is None:
            return self.start_url
        return f"{site_origin}/{self.start_url.lstrip('/')}"


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def read_task(path: str | Path) -> tuple[BrowserTask, Path]:
    """The task in ``path`` and the folder it is relative to; `TaskFileError` if unusable."""
    path = Path(path)
    if not is_task_file(str(path)):
        raise TaskFileError(f"{path}: a task file ends in {', '.join(TASK_FILE_SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskFileError(f"cannot read task file {path}: {exc.strerror or exc}") from None
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TaskFileError(f"task file {path} is not valid {path.suffix[1:]}: {first}") from None
    if not isinstance(data, dict):
        raise TaskFileError(f"task file {path} must hold a mapping of fields (instruction, ...)")
    try:
        task = BrowserTask.model_validate(data)
    except ValidationError as exc:
        raise TaskFileError(f"task file {path}: {_one_line(exc)}") from None
    base = path.resolve().parent
    site = task.resolve_site(base)
    if site is not None and not site.is_dir():
        raise TaskFileError(f"task file {path}: site {task.site!r} is not a folder ({site})")
    return task, base


__all__ = [
    "ACTIONS",
    "SELECTOR_STATES",
    "TASK_FILE_SUFFIXES",
    "BrowserTask",
    "SolutionStep",
    "SuccessCheck",
    "TaskFileError",
    "is_task_file",
    "read_task",
]
