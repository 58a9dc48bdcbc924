"""Typed settings: defaults < config.toml < `AGENTCTL_*` environment < CLI flags.

`load_settings` layers the sources by hand instead of through pydantic-settings' own env and
file sources, because it must take an injected environment (tests, embedding), name the exact
file or variable that holds a bad value, and record where every value came from for
`agentctl config show`. So `Settings` is a `BaseSettings` whose only source is its keyword
arguments (constructing it never reads the process environment); `load_settings` reads the TOML
file and the environment, merges them, and validates once.

Where each value came from (`settings_sources`) is one of: `"default"`, `"file:<path>"`,
`"env:AGENTCTL_<FIELD>"`, `"init"` (passed to `Settings(...)` directly), or the label given to
`Settings.with_overrides` (`"cli"` unless told otherwise).

No secret is a setting: a sudo password is named by `sudo_password_env` and read from that
variable by the caller, and a password inside `database_url` is masked wherever shown.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin
from urllib.parse import parse_qsl, urlencode, urlsplit

from platformdirs import user_config_dir, user_data_dir, user_state_dir
from pydantic import Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agentctl.ctl.connector import DEFAULT_OUTPUT_CAP
from agentctl.ctl.diag.l1.thresholds import L1Thresholds
from agentctl.ctl.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "Settings",
    "config_file_path",
    "config_paths",
    "load_settings",
    "mask_url",
    "settings_sources",
]

APP_NAME = "agentctl"
#: Every field `foo_bar` is read from `AGENTCTL_FOO_BAR`.
ENV_PREFIX = "AGENTCTL_"
#: Names the config file to read instead of the per-user one.
CONFIG_ENV = "AGENTCTL_CONFIG"
CONFIG_FILENAME = "config.toml"

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_URL_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd"})
_MASK = "***"


def _default_data_dir() -> Path:
    # appauthor=False: no vendor folder on Windows; on Linux this is $XDG_DATA_HOME/agentctl.
    return Path(user_data_dir(APP_NAME, appauthor=False))


def _default_state_dir() -> Path:
    return Path(user_state_dir(APP_NAME, appauthor=False))


def _default_ssh_config() -> Path:
    return Path.home() / ".ssh" / "config"


class Settings(BaseSettings):
    """agentctl's settings. Build with `load_settings()`; derive with `with_overrides()`."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    inventory: Path | None = Field(
        default=None,
        description="Inventory file used when --inventory is not given.",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Persistent data: the SQLite store and known_hosts ($XDG_DATA_HOME/agentctl).",
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Disposable state such as run logs ($XDG_STATE_HOME/agentctl).",
    )
    database_url: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "SQLAlchemy URL of the store; unset means the SQLite file data_dir/agentctl.db. "
            "A password in it is always masked when shown; prefer ~/.pgpass or similar."
        ),
    )
    known_hosts: Path | None = Field(
        default=None,
        description=(
            "agentctl's own known_hosts (OpenSSH format, strict checking); "
            "unset means data_dir/known_hosts."
        ),
    )
    ssh_config: Path | None = Field(
        default_factory=_default_ssh_config,
        description="OpenSSH client config read for per-host HostName, User, Port, keys, jumps.",
    )
    use_ssh_config: bool = Field(
        default=True,
        description="Apply ssh_config to hosts; false ignores it.",
    )
    identity_files: list[Path] = Field(
        default_factory=list,
        description=(
            "Private keys tried in order before ssh-agent and ~/.ssh defaults "
            "(environment: JSON list or colon-separated paths)."
        ),
    )
    use_agent: bool = Field(
        default=True,
        description="Offer the keys held by ssh-agent ($SSH_AUTH_SOCK).",
    )
    look_for_keys: bool = Field(
        default=True,
        description="Also try ~/.ssh/id_ed25519, id_ecdsa and id_rsa.",
    )
    forks: int | None = Field(
        default=None,
        ge=1,
        description="Hosts worked on in parallel; unset lets the fan-out choose.",
    )
    connect_timeout: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds to open the TCP connection (or the channel through a jump host).",
    )
    banner_timeout: float = Field(
        default=15.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds to wait for the server's SSH banner.",
    )
    auth_timeout: float = Field(
        default=15.0,
        gt=0,
        allow_inf_nan=False,
        description="Seconds to wait for each authentication reply.",
    )
    command_timeout: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="Deadline in seconds for each remote step; a step past it fails the host.",
    )
    keepalive_interval: int = Field(
        default=15,
        ge=0,
        description="Seconds between SSH keepalives, so idle firewalls keep the session; 0 = off.",
    )
    connect_retries: int = Field(
        default=2,
        ge=0,
        description="Retries after a failed connect; auth and host-key failures never retry.",
    )
    retry_backoff: float = Field(
        default=0.5,
        ge=0,
        allow_inf_nan=False,
        description="Base delay in seconds between connection retries (jittered).",
    )
    max_fail_percent: float = Field(
        default=100.0,
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="Stop starting new hosts once more than this percent have failed; 100 = never.",
    )
    output_cap_bytes: int = Field(
        default=DEFAULT_OUTPUT_CAP,
        ge=1,
        description="Bytes of stdout/stderr kept per command; the rest is cut with a marker.",
    )
    sudo_password_env: str | None = Field(
        default=None,
        description=(
            "NAME of an environment variable holding the sudo password, never the password "
            "itself; unset means passwordless `sudo -n`."
        ),
    )

    diag_l1: L1Thresholds = Field(
        default_factory=L1Thresholds,
        description="Thresholds of `agentctl diag l1` (a [diag_l1] table in config.toml).",
    )

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)
    _config_file: Path | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments only: `load_settings` does the layering (see module docstring)."""
        return (init_settings,)

    @field_validator("*", mode="after")
    @classmethod
    def _expand_home(cls, value: Any) -> Any:
        """`~` in any path, whichever source gave it, as a shell would have expanded it."""
        if isinstance(value, Path):
            return value.expanduser()
        if isinstance(value, list):
            return [v.expanduser() if isinstance(v, Path) else v for v in value]
        return value

    @field_validator("database_url", mode="after")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None:
            if not _URL_SCHEME_RE.match(value):
                raise ValueError(
                    "must be a SQLAlchemy URL such as sqlite:////path/to.db "
                    "or postgresql://user@host/db"
                )
            urlsplit(value)  # ValueError (e.g. a broken IPv6 host) becomes a validation error
        return value

    @field_validator("sudo_password_env", mode="after")
    @classmethod
    def _check_env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME_RE.fullmatch(value):
            raise ValueError(
                "must be the name of an environment variable (letters, digits, _), "
                "not the password itself"
            )
        return value

    def model_post_init(self, context: Any, /) -> None:
        """Direct construction reports "init" or "default"; loaders replace this afterwards."""
        self._sources = {
            name: "init" if name in self.model_fields_set else "default"
            for name in type(self).model_fields
        }

    @property
    def config_file(self) -> Path | None:
        """The config file `load_settings` looked at (it may not exist); None if built directly."""
        return self._config_file

    def effective_database_url(self) -> str:
        """The URL the store connects to: `database_url`, else SQLite under `data_dir`."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'agentctl.db'}"

    def effective_known_hosts(self) -> Path:
        """agentctl's known_hosts file: `known_hosts`, else `data_dir/known_hosts`."""
        return self.known_hosts if self.known_hosts is not None else self.data_dir / "known_hosts"

    def public_dict(self) -> dict[str, Any]:
        """All fields, JSON-serialisable (paths as str), with any database password masked."""
        data = self.model_dump(mode="json")
        if self.database_url is not None:
            data["database_url"] = mask_url(self.database_url)
        return data

    def describe(self) -> list[tuple[str, str, str]]:
        """(field, value, description) rows for `agentctl config show`, in declaration order."""
        public = self.public_dict()
        return [
            (name, _display(public[name]), info.description or "")
            for name, info in type(self).model_fields.items()
        ]

    def with_overrides(self, updates: Mapping[str, Any], *, source: str = "cli") -> Settings:
        """A validated copy with `updates` applied and reported as `source`.

        Prefer this to `model_copy(update=...)`, which skips validation and leaves the sources
        stale. None values are skipped, so unset CLI options can be passed straight through.
        """
        given = {name: value for name, value in updates.items() if value is not None}
        values = {name: getattr(self, name) for name in type(self).model_fields} | given
        sources = self._sources | dict.fromkeys(given, source)
        return _build(values, sources, self._config_file)


def settings_sources(settings: Settings) -> dict[str, str]:
    """Field -> where its value came from (labels in the module docstring)."""
    return dict(settings._sources)


def config_file_path(config_file: Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The config file to read: the argument, else `$AGENTCTL_CONFIG`, else the per-user one."""
    return _locate_config(config_file, os.environ if env is None else env)[0]


def load_settings(
    config_file: Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Defaults < config file < `AGENTCTL_*` variables in `env` (default: `os.environ`).

    A missing per-user config file is fine; a missing file named by the argument or by
    `AGENTCTL_CONFIG` is an error. An empty variable counts as unset. XDG base directories for
    the defaults come from the process environment (platformdirs), not from `env`.
    Raises ConfigError naming the file (and line) or the variable at fault.
    """
    environ = os.environ if env is None else env
    path, explicit = _locate_config(config_file, environ)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, value in _read_config_file(path, required=explicit).items():
        values[name] = value
        sources[name] = f"file:{path}"
    for name, (var, value) in _read_env(environ).items():
        values[name] = value
        sources[name] = f"env:{var}"
    return _build(values, sources, path)


def config_paths(settings: Settings | None = None) -> dict[str, str]:
    """Where agentctl reads and writes, like `k9s info`; loads the settings when not given."""
    loaded = load_settings() if settings is None else settings
    config_file = loaded.config_file or config_file_path()
    return {
        "config_file": str(config_file),
        "data_dir": str(loaded.data_dir),
        "state_dir": str(loaded.state_dir),
        "database": mask_url(loaded.effective_database_url()),
        "known_hosts": str(loaded.effective_known_hosts()),
    }


def mask_url(url: str) -> str:
    """`url` with its password (userinfo or a password= query parameter) replaced by ***.

    Done with urllib.parse, not SQLAlchemy, so settings never import the store's dependency.
    Only the changed parts are rewritten: `urlunsplit` would turn `sqlite:///x` into `sqlite:/x`.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _MASK  # unparseable: cannot tell where a password would be, so show nothing
    userinfo, at, hostport = parts.netloc.rpartition("@")  # rpartition: '@' inside a password
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        url = url.replace(f"//{parts.netloc}", f"//{user}:{_MASK}@{hostport}", 1)
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
            masked = [(k, _MASK if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs]
            url = url.replace(f"?{parts.query}", f"?{urlencode(masked, safe='*')}", 1)
    return url


# --- loading -----------------------------------------------------------------------------------


def _locate_config(config_file: Path | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """(path, explicit): a file the user named must exist; the per-user default need not."""
    if config_file is not None:
        return config_file.expanduser(), True
    named = environ.get(CONFIG_ENV)
    if named:
        return Path(named).expanduser(), True
    return Path(user_config_dir(APP_NAME, appauthor=False)) / CONFIG_FILENAME, False


def _read_config_file(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: config file not found") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error(path, exc)) from exc
    _reject_unknown(path, data)
    return {name: _resolve_paths(name, value, path.parent) for name, value in data.items()}


def _toml_error(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    """`path:line:col: invalid TOML: reason`, the position lifted out of tomllib's message."""
    text = str(exc)
    pos = _TOML_POS_RE.search(text)
    if pos is None:
        return f"{path}: invalid TOML: {text}"
    return f"{path}:{pos[1]}:{pos[2]}: invalid TOML: {text[: pos.start()]}"


def _reject_unknown(path: Path, data: Mapping[str, Any]) -> None:
    """A misspelt key would otherwise be silently ignored; name it and suggest the field."""
    fields = list(Settings.model_fields)
    unknown = [key for key in data if key not in Settings.model_fields]
    if not unknown:
        return
    close = {key: difflib.get_close_matches(key, fields, n=1) for key in unknown}
    guesses = [f"'{match[0]}' for '{key}'" for key, match in close.items() if match]
    if len(unknown) == 1 and guesses:
        hint = f"did you mean '{close[unknown[0]][0]}'?"
    elif guesses:
        hint = "did you mean " + ", ".join(guesses) + "?"
    else:
        hint = "`agentctl config show` lists every setting"
    names = ", ".join(f"'{key}'" for key in unknown)
    raise ConfigError(
        f"{path}: unknown setting{'s' if len(unknown) > 1 else ''} {names}",
        hint=hint,
    )


def _is_path_field(name: str) -> bool:
    annotation = Settings.model_fields[name].annotation
    return annotation is Path or Path in get_args(annotation)


def _resolve_paths(name: str, value: Any, base: Path) -> Any:
    """Relative paths in the file are relative to the file, so it works from any directory."""
    if not _is_path_field(name):
        return value

    def resolve(item: Any) -> Any:
        if not isinstance(item, str):
            return item  # not a path at all: leave it to validation to reject
        path = Path(item).expanduser()
        return path if path.is_absolute() else base / path

    return [resolve(v) for v in value] if isinstance(value, list) else resolve(value)


def _read_env(environ: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """Field -> (variable, raw value) for every non-empty `AGENTCTL_<FIELD>`; others ignored."""
    found: dict[str, tuple[str, Any]] = {}
    for name, info in Settings.model_fields.items():
        var = ENV_PREFIX + name.upper()
        raw = environ.get(var)
        if not raw:
            continue
        found[name] = (var, _parse_list(var, raw) if get_origin(info.annotation) is list else raw)
    return found


def _parse_list(var: str, raw: str) -> list[Any]:
    """A JSON list when it looks like one, else `os.pathsep`-separated like $PATH."""
    if not raw.lstrip().startswith("["):
        return [item for item in raw.split(os.pathsep) if item]
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{var}: invalid JSON list: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(parsed, list):
        raise ConfigError(f"{var}: expected a JSON list")
    return parsed


def _build(
    values: Mapping[str, Any], sources: Mapping[str, str], config_file: Path | None
) -> Settings:
    """Validate once, then attach provenance; errors name the source of each bad value."""
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError("; ".join(_error_lines(exc, sources))) from None
    settings._sources = {name: sources.get(name, "default") for name in Settings.model_fields}
    settings._config_file = config_file
    return settings


def _error_lines(exc: ValidationError, sources: Mapping[str, str]) -> list[str]:
    """`file: field: msg`, `AGENTCTL_VAR: msg` or `cli: field: msg`, one per error.

    Input values are never echoed: a misplaced secret (a password put in sudo_password_env or
    in a malformed database_url) must not reach a terminal or a log.
    """
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = err["loc"]
        name = str(loc[0]) if loc else "settings"
        index = "".join(f"[{part}]" for part in loc[1:])
        source = sources.get(name, "default")
        kind, _, origin = source.partition(":")
        if kind == "env":
            where = f"{origin}{index}"
        elif kind == "file":
            where = f"{origin}: {name}{index}"
        else:
            where = f"{source}: {name}{index}" if source != "default" else f"{name}{index}"
        lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return lines


def _display(value: Any) -> str:
    """Strings as they are, None as (unset), the rest as JSON (true, 10.0, ["a"])."""
    if value is None:
        return "(unset)"
    if isinstance(value, str):
        return value
    return json.dumps(value)
