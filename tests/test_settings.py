"""Settings layering (defaults < config.toml < AGENTCTL_* < CLI) with real files and a real env."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pydantic
import pytest

from agentctl.ctl.errors import ConfigError, ExitCode
from agentctl.ctl.settings import (
    Settings,
    config_file_path,
    config_paths,
    load_settings,
    mask_url,
    settings_sources,
)


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A private HOME and XDG tree, and no AGENTCTL_* variables leaking in from the runner."""
    for name in list(os.environ):
        if name.startswith("AGENTCTL_"):
            monkeypatch.delenv(name)
    dirs = {
        "home": tmp_path / "home",
        "config": tmp_path / "xdg-config",
        "data": tmp_path / "xdg-data",
        "state": tmp_path / "xdg-state",
    }
    for path in dirs.values():
        path.mkdir()
    monkeypatch.setenv("HOME", str(dirs["home"]))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(dirs["config"]))
    monkeypatch.setenv("XDG_DATA_HOME", str(dirs["data"]))
    monkeypatch.setenv("XDG_STATE_HOME", str(dirs["state"]))
    return dirs


def write_user_config(xdg: dict[str, Path], text: str) -> Path:
    path = xdg["config"] / "agentctl" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- layering ------------------------------------------------------------------------------------


def test_defaults_live_under_xdg_dirs(xdg: dict[str, Path]) -> None:
    settings = load_settings()

    assert settings.data_dir == xdg["data"] / "agentctl"
    assert settings.state_dir == xdg["state"] / "agentctl"
    assert settings.ssh_config == xdg["home"] / ".ssh" / "config"
    assert settings.effective_database_url() == f"sqlite:///{xdg['data']}/agentctl/agentctl.db"
    assert settings.effective_known_hosts() == xdg["data"] / "agentctl" / "known_hosts"
    assert settings.config_file == xdg["config"] / "agentctl" / "config.toml"
    assert settings.connect_timeout == 10
    assert settings.command_timeout == 300
    assert settings.output_cap_bytes == 65536
    assert settings.forks is None
    assert set(settings_sources(settings).values()) == {"default"}


def test_user_config_file_overrides_defaults(xdg: dict[str, Path]) -> None:
    path = write_user_config(
        xdg,
        'connect_timeout = 3.5\nforks = 8\nuse_agent = false\nidentity_files = ["/k/a", "/k/b"]\n',
    )

    settings = load_settings(env={})

    assert settings.connect_timeout == 3.5
    assert settings.forks == 8
    assert settings.use_agent is False
    assert settings.identity_files == [Path("/k/a"), Path("/k/b")]
    sources = settings_sources(settings)
    assert sources["connect_timeout"] == f"file:{path}"
    assert sources["identity_files"] == f"file:{path}"
    assert sources["banner_timeout"] == "default"


def test_env_overrides_file(xdg: dict[str, Path]) -> None:
    path = write_user_config(xdg, "connect_timeout = 3.5\nforks = 8\n")

    settings = load_settings(env={"AGENTCTL_CONNECT_TIMEOUT": "7", "AGENTCTL_USE_AGENT": "no"})

    assert settings.connect_timeout == 7.0
    assert settings.use_agent is False
    assert settings.forks == 8
    sources = settings_sources(settings)
    assert sources["connect_timeout"] == "env:AGENTCTL_CONNECT_TIMEOUT"
    assert sources["use_agent"] == "env:AGENTCTL_USE_AGENT"
    assert sources["forks"] == f"file:{path}"


def test_process_environment_is_the_default_env(
    xdg: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTCTL_FORKS", "12")

    settings = load_settings()

    assert settings.forks == 12
    assert settings_sources(settings)["forks"] == "env:AGENTCTL_FORKS"


def test_empty_env_var_counts_as_unset(xdg: dict[str, Path]) -> None:
    write_user_config(xdg, "forks = 8\n")

    settings = load_settings(env={"AGENTCTL_FORKS": ""})

    assert settings.forks == 8


def test_agentctl_config_names_the_file(xdg: dict[str, Path], tmp_path: Path) -> None:
    write_user_config(xdg, "forks = 1\n")
    other = write(tmp_path / "other.toml", "forks = 2\n")
    arg = write(tmp_path / "arg.toml", "forks = 3\n")

    from_env = load_settings(env={"AGENTCTL_CONFIG": str(other)})
    from_arg = load_settings(arg, env={"AGENTCTL_CONFIG": str(other)})

    assert (from_env.forks, from_env.config_file) == (2, other)
    assert (from_arg.forks, from_arg.config_file) == (3, arg)
    assert config_file_path(env={"AGENTCTL_CONFIG": str(other)}) == other


def test_named_config_file_must_exist(xdg: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_settings(missing, env={})
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_settings(env={"AGENTCTL_CONFIG": str(missing)})


def test_unreadable_config_file(xdg: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path, env={})  # a directory


def test_relative_paths_in_file_are_relative_to_the_file(
    xdg: dict[str, Path], tmp_path: Path
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    path = write(
        conf / "config.toml",
        'inventory = "fleet.yaml"\nidentity_files = ["keys/a", "~/b", "/abs/c"]\n'
        'data_dir = "~/agentctl-data"\n',
    )

    settings = load_settings(path, env={})

    assert settings.inventory == conf / "fleet.yaml"
    assert settings.identity_files == [conf / "keys" / "a", xdg["home"] / "b", Path("/abs/c")]
    assert settings.data_dir == xdg["home"] / "agentctl-data"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["/k/a", "~/k b"]', ["/k/a", "{home}/k b"]),
        ("/k/a:~/b::/k/c", ["/k/a", "{home}/b", "/k/c"]),
    ],
)
def test_identity_files_from_env(xdg: dict[str, Path], raw: str, expected: list[str]) -> None:
    settings = load_settings(env={"AGENTCTL_IDENTITY_FILES": raw})

    home = str(xdg["home"])
    assert settings.identity_files == [Path(p.format(home=home)) for p in expected]


def test_identity_files_bad_json_names_the_variable(xdg: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"^AGENTCTL_IDENTITY_FILES: invalid JSON list"):
        load_settings(env={"AGENTCTL_IDENTITY_FILES": '["/k/a",'})


def test_settings_constructor_never_reads_the_environment(
    xdg: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTCTL_FORKS", "9")

    assert Settings().forks is None
    assert settings_sources(Settings(forks=2))["forks"] == "init"


# --- errors --------------------------------------------------------------------------------------


def test_invalid_toml_names_file_and_line(xdg: dict[str, Path]) -> None:
    path = write_user_config(xdg, "forks = 2\nconnect_timeout = \n")

    with pytest.raises(ConfigError) as caught:
        load_settings(env={})

    assert caught.value.message.startswith(f"{path}:2:")
    assert "invalid TOML" in caught.value.message
    assert caught.value.exit_code == ExitCode.USAGE


def test_invalid_value_in_file_names_file_and_field(xdg: dict[str, Path]) -> None:
    path = write_user_config(xdg, "connect_timeout = 0\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(env={})

    assert caught.value.message == f"{path}: connect_timeout: Input should be greater than 0"


def test_invalid_value_in_env_names_the_variable(xdg: dict[str, Path]) -> None:
    write_user_config(xdg, "connect_timeout = 5\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(env={"AGENTCTL_CONNECT_TIMEOUT": "soon"})

    assert caught.value.message.startswith("AGENTCTL_CONNECT_TIMEOUT: Input should be a valid")
    assert "config.toml" not in caught.value.message


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("forks = 0", "forks"),
        ("forks = 2.5", "forks"),
        ("connect_timeout = inf", "connect_timeout"),
        ("command_timeout = -1", "command_timeout"),
        ("banner_timeout = nan", "banner_timeout"),
        ("keepalive_interval = -1", "keepalive_interval"),
        ("connect_retries = -1", "connect_retries"),
        ("retry_backoff = -0.1", "retry_backoff"),
        ("max_fail_percent = 100.5", "max_fail_percent"),
        ("output_cap_bytes = 0", "output_cap_bytes"),
        ('use_agent = "perhaps"', "use_agent"),
        ('database_url = "/var/lib/agentctl.db"', "database_url"),
        ('identity_files = "/k/a"', "identity_files"),
        ('sudo_password_env = "hunter2 !"', "sudo_password_env"),
    ],
)
def test_invalid_values_are_rejected(xdg: dict[str, Path], line: str, field: str) -> None:
    path = write_user_config(xdg, line + "\n")

    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: {field}: ") as caught:
        load_settings(env={})

    assert "hunter2" not in caught.value.message  # input values are never echoed


def test_unknown_key_suggests_the_field(xdg: dict[str, Path]) -> None:
    path = write_user_config(xdg, "conect_timeout = 5\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(env={})

    assert caught.value.message == f"{path}: unknown setting 'conect_timeout'"
    assert caught.value.hint == "did you mean 'connect_timeout'?"


def test_unknown_keys_without_a_close_match(xdg: dict[str, Path]) -> None:
    write_user_config(xdg, "forx = 2\n[ssh]\nport = 22\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(env={})

    assert "unknown settings 'forx', 'ssh'" in caught.value.message
    assert caught.value.hint == "did you mean 'forks' for 'forx'?"


# --- presentation --------------------------------------------------------------------------------


def test_public_dict_masks_the_database_password(xdg: dict[str, Path]) -> None:
    settings = load_settings(env={"AGENTCTL_DATABASE_URL": "postgresql://u:secret@h/db"})

    public = settings.public_dict()

    assert public["database_url"] == "postgresql://u:***@h/db"
    assert "secret" not in json.dumps(public)
    assert public["data_dir"] == str(xdg["data"] / "agentctl")
    assert "secret" not in json.dumps(config_paths(settings))
    assert settings.effective_database_url() == "postgresql://u:secret@h/db"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://u:secret@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql://u:p@ss:w0rd@h/db", "postgresql://u:***@h/db"),
        ("mysql://:pw@h/db", "mysql://:***@h/db"),
        ("postgresql://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require"),
        ("postgresql://h/db?user=u&password=pw", "postgresql://h/db?user=u&password=***"),
        ("sqlite:////var/lib/agentctl.db", "sqlite:////var/lib/agentctl.db"),
        ("sqlite://", "sqlite://"),
        ("postgresql://u:pw@[::1/db", "***"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_describe_covers_every_field_with_a_description(xdg: dict[str, Path]) -> None:
    rows = load_settings(env={}).describe()

    assert [name for name, _, _ in rows] == list(Settings.model_fields)
    missing = [name for name, _, description in rows if not description.strip()]
    assert not missing, f"fields without Field(description=...): {missing}"


def test_describe_values(xdg: dict[str, Path]) -> None:
    settings = load_settings(
        env={"AGENTCTL_DATABASE_URL": "postgresql://u:secret@h/db", "AGENTCTL_USE_AGENT": "0"}
    )

    values = {name: value for name, value, _ in settings.describe()}

    assert values["database_url"] == "postgresql://u:***@h/db"
    assert values["forks"] == "(unset)"
    assert values["use_agent"] == "false"
    assert values["connect_timeout"] == "10.0"
    assert values["data_dir"] == str(xdg["data"] / "agentctl")


def test_config_paths(xdg: dict[str, Path]) -> None:
    paths = config_paths()

    data = xdg["data"] / "agentctl"
    assert paths == {
        "config_file": str(xdg["config"] / "agentctl" / "config.toml"),
        "data_dir": str(data),
        "state_dir": str(xdg["state"] / "agentctl"),
        "database": f"sqlite:///{data}/agentctl.db",
        "known_hosts": str(data / "known_hosts"),
    }


# --- CLI overrides -------------------------------------------------------------------------------


def test_with_overrides_validates_and_reports_the_source(xdg: dict[str, Path]) -> None:
    path = write_user_config(xdg, "forks = 8\nconnect_timeout = 4\n")
    settings = load_settings(env={})

    cli = settings.with_overrides({"forks": 3, "inventory": None})

    assert (cli.forks, cli.connect_timeout, cli.inventory) == (3, 4.0, None)
    assert settings_sources(cli)["forks"] == "cli"
    assert settings_sources(cli)["connect_timeout"] == f"file:{path}"
    assert cli.config_file == path
    assert settings.forks == 8  # the original is untouched
    with pytest.raises(ConfigError, match=r"^cli: forks: Input should be greater than or equal"):
        settings.with_overrides({"forks": 0})


def test_settings_are_frozen(xdg: dict[str, Path]) -> None:
    settings = load_settings(env={})

    with pytest.raises(pydantic.ValidationError):
        settings.forks = 4
