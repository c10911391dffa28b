"""Load any algorithm's pydantic config from a YAML or TOML file plus ``key=value`` overrides.

Every algorithm has one pydantic config class (``extra="forbid"``); this module
is the only way the command line fills one, so a misspelt key can never be
silently ignored. Sources are applied in order: the class's defaults, then the
file, then each override.

- Files: ``.yaml``/``.yml`` or ``.toml``, a mapping at the top.
- Overrides: ``key=value``; the value is read as a YAML scalar (``3`` is an
  int, ``1e-4`` and ``0.5`` floats, ``true`` a bool, ``null`` None, ``[1, 2]``
  a list, anything else a string).
- Nested configs (a field whose type is itself a config class, e.g. the
  ``trainer`` and ``algorithm`` sections of a run) take dotted keys,
  ``trainer.iterations=5``, or nested tables in a file. A bare key that is a
  field of exactly one section goes to that section, so ``iterations=5``
  works as long as no other section also has an ``iterations``.

Mistakes raise `ConfigError` naming the key, where it came from, what is wrong
and the fix: an unknown key with the closest valid name, an ambiguous bare key
with the sections to choose from, a bad value with the validator's message.
Whatever the text, nothing else is raised: a number past Python's digit limit,
nesting too deep to read, a non-finite number (NaN or infinity: a NaN learning
rate would poison training silently), a file that is not UTF-8 and a key set
inside a value that is not a section are all a `ConfigError`.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
"""Numbers YAML 1.1 leaves as strings (``1e-4``: no dot in the mantissa)."""


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says why and the fix."""


# ---------------------------------------------------------------- reading ---


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml`` or ``.toml`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the path")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
        ) from None
    if suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {_short(str(error))}") from None
        except (ValueError, RecursionError) as error:  # digit limit, nesting depth
            raise ConfigError(f"{path} cannot be read: {_unreadable(error)}") from None
        data = {} if data is None else data
    elif suffix == ".toml":
        data = _load_toml(text, path)
    else:
        raise ConfigError(
            f"config file {path} has suffix {suffix!r}; use a .yaml, .yml or .toml file"
        )
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} holds a {type(data).__name__} at the top; a config file must be a mapping "
            "of keys to values"
        )
    _check_finite(data, str(path))
    return data


def _load_toml(text: str, path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError(
                "reading TOML on Python 3.10 needs tomli: pip install tomli (or use YAML)"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {_short(str(error))}") from None
    except (ValueError, RecursionError) as error:
        raise ConfigError(f"{path} cannot be read: {_unreadable(error)}") from None


def parse_value(text: str) -> Any:
    """A command-line value read as a YAML scalar (or flow list/mapping).

    Raises `ConfigError` for a value that reads as something unusable: a number past
    Python's digit limit or not finite, or nesting too deep to read.
    """
    try:
        if _FLOAT.match(text.strip()):
            number = float(text)
            value: Any = int(text) if re.fullmatch(r"[+-]?\d+", text.strip()) else number
        else:
            try:
                value = yaml.safe_load(text) if text.strip() else ""
            except yaml.YAMLError:
                return text
    except (ValueError, RecursionError) as error:
        raise ConfigError(
            f"value {_short(text, 60)!r} cannot be read: {_unreadable(error)}"
        ) from None
    _check_finite(value, f"value {_short(text, 60)!r}")
    return value


def parse_override(override: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``("key", parsed value)``."""
    key, sep, value = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"override {_short(override, 80)!r} is not key=value; write e.g. actor_lr=1e-4 "
            "(dotted keys reach nested sections: trainer.iterations=5)"
        )
    try:
        return key, parse_value(value)
    except ConfigError as error:
        raise ConfigError(f"override {_short(key, 60)}=...: {error}") from None


def _unreadable(error: BaseException) -> str:
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return _short(str(error), 160)


def _check_finite(value: Any, where: str) -> None:
    """Raise `ConfigError` if any number inside ``value`` is NaN or infinite, or if a list
    or mapping appears twice in it (YAML anchors and aliases: a value that holds itself,
    or one that doubles at every level and would take forever to check)."""
    stack = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list | tuple):
            if id(item) in seen:
                raise ConfigError(
                    f"{where} repeats a list or mapping (a YAML anchor and alias, &name and "
                    "*name); write the value out in full"
                )
            seen.add(id(item))
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(
                f"{where} holds {item}, which is not a finite number; give a finite value"
            )
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- schema ---


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The config class inside ``annotation`` (``X``, ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        found = [_model_class(arg) for arg in typing.get_args(annotation)]
        models = [m for m in found if m is not None]
        return models[0] if len(models) == 1 else None
    return None


def _sections(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Fields of ``model`` that are themselves config classes."""
    found = {}
    for name, field in model.model_fields.items():
        sub = _model_class(field.annotation)
        if sub is not None:
            found[name] = sub
    return found


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key the model accepts."""
    keys = []
    sections = _sections(model)
    for name in model.model_fields:
        keys.append(prefix + name)
        if name in sections:
            keys.extend(_valid_keys(sections[name], f"{prefix}{name}."))
    return keys


def _resolve(model: type[BaseModel], key: str, source: str) -> list[str]:
    """The path of field names ``key`` designates in ``model``, checked."""
    parts = key.split(".")
    fields = model.model_fields
    sections = _sections(model)
    if parts[0] not in fields:
        owners = [name for name, sub in sections.items() if parts[0] in sub.model_fields]
        if len(owners) == 1:
            return [owners[0], *_resolve(sections[owners[0]], key, source)]
        if len(owners) > 1:
            choices = ", ".join(f"{owner}.{key}" for owner in owners)
            raise ConfigError(
                f"{source}: key {key!r} is a field of several sections; write one of {choices}"
            )
        raise ConfigError(f"{source}: unknown key {key!r}{_suggestion(model, key)}")
    if len(parts) == 1:
        return parts
    if parts[0] not in sections:
        raise ConfigError(
            f"{source}: {parts[0]!r} is a value, not a section, so {key!r} cannot set "
            f"anything inside it; write {parts[0]}=<value>"
        )
    rest = ".".join(parts[1:])
    sub = sections[parts[0]]
    if parts[1] not in sub.model_fields:
        raise ConfigError(f"{source}: unknown key {key!r}{_suggestion(model, key)}")
    return [parts[0], *_resolve(sub, rest, source)]


def _suggestion(model: type[BaseModel], key: str) -> str:
    valid = _valid_keys(model)
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6) or difflib.get_close_matches(
        leaf, valid, n=1, cutoff=0.6
    )
    if not close:
        # A bare leaf name inside a section ("actor_lr" for "algorithm.actor_lr").
        leaves = {k.rsplit(".", 1)[-1]: k for k in valid}
        match = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.6)
        close = [leaves[match[0]]] if match else []
    if close:
        return f"; did you mean {close[0]!r}?"
    shown = ", ".join(k for k in valid if "." not in k)
    return f"; valid keys of {model.__name__}: {shown}"


# -------------------------------------------------------------- applying ---


def _flatten(
    data: Mapping[str, Any], model: type[BaseModel], prefix: str = ""
) -> list[tuple[str, Any]]:
    """(dotted key, value) of a (possibly nested) mapping, descending only into sections.

    A file may also spell a nested key dotted at the top (``trainer.iterations: 5``).
    """
    items = []
    sections = _sections(model)
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {_safe_repr(key)}")
        if isinstance(value, Mapping) and key in sections:
            items.extend(_flatten(value, sections[key], f"{prefix}{key}."))
        else:
            items.append((prefix + key, value))
    return items


def _set(data: dict[str, Any], path: Sequence[str], value: Any, source: str) -> None:
    node = data
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if not isinstance(child, dict):
            if child is not None and not isinstance(child, Mapping):
                section = ".".join(path[: depth + 1])
                raise ConfigError(
                    f"{source}: section {section!r} was given a plain value "
                    f"({_short(repr(child), 60)}), so nothing can be set inside it; set its "
                    f"fields one by one ({section}.<field>=<value>)"
                )
            child = {} if child is None else dict(child)
            node[part] = child
        node = child
    node[path[-1]] = value


def load_config(
    config_cls: type[M],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    defaults: Mapping[str, Any] | None = None,
) -> M:
    """Build ``config_cls`` from ``defaults``, then ``path``, then each ``key=value`` override.

    ``defaults`` (a nested mapping, e.g. a command's own presets) replaces the
    class's defaults for the keys it names. Raises `ConfigError` for an
    unreadable file, an unknown or ambiguous key, or a value the class's
    validators refuse.
    """
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if defaults:
        for key, value in _flatten(defaults, config_cls):
            resolved = _resolve(config_cls, key, "defaults")
            _set(data, resolved, value, "defaults")
            sources[".".join(resolved)] = "defaults"
        for name in _sections(config_cls):
            if isinstance(defaults.get(name), Mapping):
                data.setdefault(name, {})
    if path is not None:
        raw = read_config_file(path)
        for key, value in _flatten(raw, config_cls):
            resolved = _resolve(config_cls, key, f"{path}")
            _set(data, resolved, value, f"{path}")
            sources[".".join(resolved)] = str(path)
    for override in overrides:
        key, value = parse_override(override)
        source = f"override {_short(override, 80)!r}"
        resolved = _resolve(config_cls, key, source)
        _set(data, resolved, value, source)
        sources[".".join(resolved)] = source
    try:
        config = config_cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_explain(error, config_cls, sources)) from None
    except (TypeError, RecursionError) as error:  # a validator that did not expect the type
        raise ConfigError(
            f"invalid {config_cls.__name__} from {', '.join(sorted(set(sources.values())))}: "
            f"{type(error).__name__}: {_short(str(error), 160)}"
        ) from None
    found = _non_finite_field(config)
    if found is not None:
        # Text such as "inf" reads as a string and pydantic turns it into a float.
        location, value = found
        where = sources.get(location, "defaults")
        raise ConfigError(
            f"invalid {config_cls.__name__}: {location} (got {value}) from {where}: {_NOT_FINITE}"
        )
    return config


_NOT_FINITE = "not a finite number (NaN or infinity); give a finite value"


def _non_finite(value: Any) -> bool:
    """Whether ``value`` is, or is text that pydantic reads as, NaN or an infinity."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return False
    return isinstance(value, float) and not math.isfinite(value)


def _non_finite_field(value: Any, location: str = "") -> tuple[str, float] | None:
    """The first float inside a validated config (dotted location) that is not finite."""
    if isinstance(value, float):
        return (location, value) if not math.isfinite(value) else None
    if isinstance(value, BaseModel):
        items: Any = ((name, getattr(value, name)) for name in type(value).model_fields)
    elif isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite_field(item, f"{location}.{key}" if location else str(key))
        if found is not None:
            return found
    return None


def _explain(error: ValidationError, model: type[BaseModel], sources: Mapping[str, str]) -> str:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if _non_finite(item.get("input")):  # "nan" fails a bound first: say what is wrong
            message = _NOT_FINITE
        where = sources.get(location)
        if where is None:  # a model-level validator: name every source involved
            where = ", ".join(sorted(set(sources.values()))) or "defaults"
        given = (
            f" (got {_short(_safe_repr(item['input']), 80)})"
            if "input" in item and location
            else ""
        )
        problems.append(f"{location or model.__name__}{given} from {where}: {message}")
    return f"invalid {model.__name__}: " + "; ".join(problems)


def _safe_repr(value: Any) -> str:
    """A short repr, whatever the value's size or depth."""
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother = 3, 60, 60
    return shown.repr(value)


def dump_config(config: BaseModel, path: str | Path) -> Path:
    """Write ``config`` as YAML (what a run used), readable back with `load_config`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path


__all__ = [
    "ConfigError",
    "dump_config",
    "load_config",
    "parse_override",
    "parse_value",
    "read_config_file",
]
