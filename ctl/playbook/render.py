"""Jinja2 for playbooks: task arguments, `when` conditions, `loop` lists and template files.

A sandboxed environment with StrictUndefined: a misspelt variable is an error naming the task,
never an empty string that silently writes a broken config. Inventory values are data: they are
rendered into strings and argv lists, never re-parsed as templates, and every remote command is
an argv list quoted by the connector, so a hostile value cannot become shell syntax. A string
that is exactly one `{{ expression }}` keeps the expression's type (a list stays a list), as in
Ansible.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)


class RenderError(Exception):
    """A template or condition failed; the message says which and why."""


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()


def _to_nice_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=False, width=10**6)


def _to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def make_environment(template_dirs: Sequence[Path] = ()) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        loader=jinja2.FileSystemLoader([str(d) for d in template_dirs]),
    )
    # yaml / json: embed inventory data in a config file without string-concatenating it
    env.filters["to_yaml"] = _to_yaml
    env.filters["to_nice_yaml"] = _to_nice_yaml
    env.filters["to_json"] = _to_json
    env.filters["quote"] = _to_json  # a JSON string is also a valid YAML scalar
    return env


def render_value(env: SandboxedEnvironment, value: Any, context: Mapping[str, Any]) -> Any:
    """`value` with every string rendered; a lone `{{ expr }}` keeps its native type."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        m = _SINGLE.match(value)
        try:
            if m is not None:
                result = env.compile_expression(m.group("expr"), undefined_to_none=False)(**context)
                if isinstance(result, jinja2.Undefined):
                    result._fail_with_undefined_error()
                return result
            return env.from_string(value).render(**context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"{value!r}: {_why(exc)}") from None
        except Exception as exc:  # a filter's own error (a value YAML cannot represent...)
            raise RenderError(f"{value!r}: {type(exc).__name__}: {exc}") from None
    if isinstance(value, list):
        return [render_value(env, v, context) for v in value]
    if isinstance(value, dict):
        return {k: render_value(env, v, context) for k, v in value.items()}
    return value


def evaluate(env: SandboxedEnvironment, expression: str, context: Mapping[str, Any]) -> bool:
    """A `when` condition."""
    try:
        return bool(env.compile_expression(expression, undefined_to_none=False)(**context))
    except jinja2.TemplateError as exc:
        raise RenderError(f"condition {expression!r}: {_why(exc)}") from None
    except Exception as exc:
        raise RenderError(f"condition {expression!r}: {type(exc).__name__}: {exc}") from None


def render_template(env: SandboxedEnvironment, name: str, context: Mapping[str, Any]) -> str:
    """A template file from the playbook's template directories."""
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound:
        raise RenderError(f"template {name!r} not found") from None
    except jinja2.TemplateError as exc:
        raise RenderError(f"template {name!r}: {_why(exc)}") from None
    except Exception as exc:
        raise RenderError(f"template {name!r}: {type(exc).__name__}: {exc}") from None


def _why(exc: jinja2.TemplateError) -> str:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"syntax error: {exc.message} (line {exc.lineno})"
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined: {exc.message}"
    return str(exc.message or exc)
