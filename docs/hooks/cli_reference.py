"""mkdocs hook: the command-line reference, generated from the `archer` app at build time.

A page that holds the line ``<!-- archer-cli-reference -->`` gets it replaced by one
section per command and sub-command: its help, its usage line, its arguments and its
options (with defaults and environment variables), read from the click command that
typer builds. Nothing is copied by hand, so the page cannot fall behind the code.

Typer carries its own copy of click, so the command objects are read by duck typing
(``param_type_name``, ``list_commands``) rather than by ``isinstance`` checks.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- archer-cli-reference -->"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render_cli())


def render_cli() -> str:
    import typer

    from archer_agents.cli.app import full_app

    root = typer.main.get_command(full_app())
    root_ctx = root.context_class(root, info_name="archer")
    lines: list[str] = []
    _render(root, root_ctx, lines, level=2)
    return "\n".join(lines) + "\n"


def _commands(command: Any, ctx: Any) -> list[tuple[str, Any]]:
    if not hasattr(command, "list_commands"):
        return []
    found = []
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            found.append((name, sub))
    return found


def _render(command: Any, ctx: Any, lines: list[str], level: int) -> None:
    path = ctx.command_path
    lines.append(f"{'#' * level} `{path}`")
    lines.append("")
    if command.help:
        lines.append(_clean(command.help))
        lines.append("")
    lines.append("```text")
    lines.append(_usage(command, path))
    lines.append("```")
    lines.append("")

    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [
        p
        for p in command.params
        if p.param_type_name == "option" and not getattr(p, "hidden", False)
    ]
    if arguments:
        lines.append("**Arguments**")
        lines.append("")
        lines.append("| argument | type | required | description |")
        lines.append("|---|---|---|---|")
        for arg in arguments:
            name = _argument_name(arg)
            help_text = getattr(arg, "help", None) or ""
            required = "yes" if arg.required else "no"
            lines.append(f"| `{name}` | {_type(arg)} | {required} | {_cell(help_text)} |")
        lines.append("")
    if options:
        lines.append("**Options**")
        lines.append("")
        lines.append("| option | type | default | description |")
        lines.append("|---|---|---|---|")
        for opt in options:
            names = " / ".join(f"`{n}`" for n in [*opt.opts, *opt.secondary_opts])
            description = _cell(opt.help or "")
            if opt.required:
                description = ("**Required.** " + description).strip()
            if opt.envvar:
                envvars = [opt.envvar] if isinstance(opt.envvar, str) else list(opt.envvar)
                description += " Environment: " + ", ".join(f"`{e}`" for e in envvars) + "."
            lines.append(f"| {names} | {_type(opt)} | {_default(opt)} | {description.strip()} |")
        lines.append("")

    for name, sub in _commands(command, ctx):
        _render(sub, sub.context_class(sub, info_name=name, parent=ctx), lines, level + 1)


def _type(param: Any) -> str:
    is_option = param.param_type_name == "option"
    if is_option and param.is_flag:
        return "flag"
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:  # typer's own parameters
        annotation = descriptor.annotation
        args = getattr(annotation, "__args__", None)
        if args and getattr(annotation, "__origin__", None) is list:
            annotation = args[0]  # a repeatable option or a variadic argument
        text = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    else:
        choices = getattr(param.type, "choices", None)
        if choices:
            return " \\| ".join(f"`{c}`" for c in choices)
        text = str(getattr(param.type, "name", "")).lower()
    if is_option and param.multiple:
        return f"`{text}`, repeatable"
    if not is_option and param.nargs == -1:
        return f"`{text}`, one or more"
    return f"`{text}`"


def _argument_name(arg: Any) -> str:
    name = (arg.metavar or arg.name or "").upper()
    return name + "..." if arg.nargs == -1 else name


def _usage(command: Any, path: str) -> str:
    pieces = [path, "[OPTIONS]"]
    for param in command.params:
        if param.param_type_name == "argument":
            name = _argument_name(param)
            pieces.append(name if param.required else f"[{name}]")
    if hasattr(command, "list_commands"):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _default(opt: Any) -> str:
    if opt.is_flag and opt.secondary_opts:
        on, off = opt.opts[0], opt.secondary_opts[0]
        return f"`{on if opt.default else off}`"
    default = opt.default
    if default is None or opt.required or default == () or default == []:
        return ""
    if callable(default):
        return "(computed)"
    if opt.is_flag:
        return "" if not default else "on"
    return f"`{default}`"


def _clean(text: str) -> str:
    # click's "\b" marks a paragraph not to rewrap; markdown does not need it.
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


def _cell(text: str) -> str:
    return " ".join(_clean(text).split()).replace("|", "\\|")
