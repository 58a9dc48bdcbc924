"""cloud-init NoCloud seeds (user-data, meta-data) for inventory hosts, rendered with Jinja2.

Pure: inventory hosts and key text in, file texts out. The templates live in
agentctl.playbooks (templates/cloud-init/) and embed every value through `yaml_inline`, which
is `yaml.safe_dump` of the value as a one-line flow node with double-quoted strings, so a
hostile inventory value stays one string. Host and user names are also validated, because a
name cloud-init cannot use would fail on first boot, far from the inventory line that wrote it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from agentctl.ctl.bundle.layout import APT_DIR
from agentctl.ctl.errors import InventoryError, UsageError
from agentctl.ctl.inventory import Host

TEMPLATE_PACKAGE = "agentctl.playbooks"
TEMPLATE_DIR = "templates/cloud-init"
#: where the provision step puts the bundle on a node, under the host's agentctl_install_root
NODE_BUNDLE_SUBDIR = "bundle"
APT_SCRIPT_PATH = "/usr/local/sbin/agentctl-bundle-apt"
APT_LIST_STAGED = "/etc/agentctl/agentctl-bundle.list"
APT_LIST_ACTIVE = "/etc/apt/sources.list.d/agentctl-bundle.list"
BUNDLE_PUBKEY_PATH = "/etc/agentctl/bundle.pub"
SEED_FILES = ("user-data", "meta-data")

#: Enables the bundle's apt repository only once the bundle is on the node and its
#: SHA256SUMS (and, with a pinned key, its signature) check out. Values arrive as arguments,
#: never interpolated into the script text.
APT_SCRIPT = """#!/bin/sh
# agentctl: point apt at the bundle's repository once the bundle is here and verifies.
# usage: agentctl-bundle-apt BUNDLE_DIR STAGED_LIST ACTIVE_LIST [PUBKEY]
set -eu
bundle=$1 staged=$2 active=$3 pubkey=${4:-}
if [ ! -f "$bundle/SHA256SUMS" ]; then
  echo "agentctl-bundle-apt: no bundle at $bundle yet; apt left as it is" >&2
  exit 0
fi
if [ -n "$pubkey" ]; then
  openssl pkeyutl -verify -pubin -inkey "$pubkey" -rawin \\
    -in "$bundle/SHA256SUMS" -sigfile "$bundle/SHA256SUMS.sig" >/dev/null
fi
(cd "$bundle" && sha256sum --quiet --strict -c SHA256SUMS)
install -m 0644 "$staged" "$active"
"""

_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


def parse_authorized_keys(text: str, *, source: str = "--ssh-pubkey") -> tuple[str, ...]:
    """OpenSSH public key lines from `text`; UsageError for a private key or anything else."""
    if "PRIVATE KEY" in text:
        raise UsageError(f"{source} holds a private key; give the .pub file")
    keys: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, rest = line.partition(" ")
        blob = rest.split(" ", 1)[0]
        if kind not in _KEY_TYPES or not _blob_is(kind, blob):
            raise UsageError(f"{source} line {number}: not an OpenSSH public key line")
        keys.append(line)
    if not keys:
        raise UsageError(f"{source}: no public key in it")
    return tuple(keys)


def _blob_is(kind: str, blob: str) -> bool:
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return False
    name = kind.encode()
    return data[:4] == len(name).to_bytes(4, "big") and data[4 : 4 + len(name)] == name


def usable_user(name: str) -> bool:
    """A name cloud-init can create for the operator: lowercase POSIX, and not root."""
    return bool(_USER.fullmatch(name)) and name != "root"


@dataclass(frozen=True)
class SeedHost:
    """What one host's seed says, already validated."""

    name: str
    hostname: str
    fqdn: str | None
    user: str
    ssh_keys: tuple[str, ...]
    bundle_dir: str


def seed_host(host: Host, ssh_keys: Sequence[str], *, default_user: str) -> SeedHost:
    """A host's seed inputs: InventoryError naming the host's line for a name cloud-init
    cannot use. The user is the one agentctl connects as (ansible_user, else `default_user`)."""
    name = host.name
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InventoryError(
            f"host {name!r} is not a valid hostname (RFC 1123) for a cloud-init seed",
            path=host.source,
            line=host.line,
        )
    user = host.user or default_user
    if not usable_user(user):
        raise InventoryError(
            f"user {user!r} cannot be created by cloud-init (lowercase POSIX name, not root)",
            path=host.source,
            line=host.line,
            field="ansible_user",
        )
    return SeedHost(
        name=name,
        hostname=labels[0],
        fqdn=name if len(labels) > 1 else None,
        user=user,
        ssh_keys=tuple(ssh_keys),
        bundle_dir=f"{host.install_root.rstrip('/')}/{NODE_BUNDLE_SUBDIR}",
    )


class _InlineDumper(yaml.SafeDumper):
    """Strings always double-quoted: one line whatever they hold (newlines become \\n)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')


_InlineDumper.add_representer(str, _represent_str)


def yaml_inline(value: Any) -> str:
    """`value` as a one-line YAML flow node, safe to place after `key: ` or `- `."""
    text = yaml.dump(
        value, Dumper=_InlineDumper, default_flow_style=True, width=2**31 - 1, allow_unicode=False
    )
    text = text.removesuffix("\n").removesuffix("\n...")
    if "\n" in text:  # cannot happen with quoted strings and flow style; never emit it if it does
        raise ValueError("yaml_inline produced more than one line")
    return text


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["yaml_inline"] = yaml_inline
    return env


def load_template(name: str) -> str:
    return files(TEMPLATE_PACKAGE).joinpath(f"{TEMPLATE_DIR}/{name}").read_text(encoding="utf-8")


def apt_context(seed: SeedHost, pubkey_pem: str | None) -> dict[str, Any]:
    apt_dir = f"{seed.bundle_dir}/{APT_DIR}"
    runcmd = [APT_SCRIPT_PATH, seed.bundle_dir, APT_LIST_STAGED, APT_LIST_ACTIVE]
    if pubkey_pem:
        runcmd.append(BUNDLE_PUBKEY_PATH)
    return {
        "script_path": APT_SCRIPT_PATH,
        "script": APT_SCRIPT,
        "list_path": APT_LIST_STAGED,
        # trusted=yes: apt cannot check an Ed25519 signature; the script checks the bundle first
        "source_line": f"deb [trusted=yes] file:{apt_dir} ./\n",
        "pubkey_path": BUNDLE_PUBKEY_PATH,
        "pubkey_pem": pubkey_pem,
        "runcmd": runcmd,
    }


def render_seed(
    seed: SeedHost,
    *,
    apt: bool,
    pubkey_pem: str | None = None,
    templates: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """{"user-data": ..., "meta-data": ...} for one host.

    `apt`: the bundle carries an apt repository, so the seed installs the script that enables
    it. `pubkey_pem`: the bundle's signing public key, pinned on the node for that script.
    """
    env = _environment()
    sources = templates or {name: load_template(f"{name}.j2") for name in SEED_FILES}
    context: dict[str, Any] = {
        "hostname": seed.hostname,
        "fqdn": seed.fqdn,
        "user": seed.user,
        "ssh_keys": list(seed.ssh_keys),
        "instance_id": f"iid-agentctl-{seed.name}",
        "apt": apt_context(seed, pubkey_pem) if apt else None,
    }
    out = {name: env.from_string(sources[name]).render(context) for name in SEED_FILES}
    _check_user_data(out["user-data"], context)
    return out


def _check_user_data(text: str, context: Mapping[str, Any]) -> None:
    """Parse what was rendered and compare the key fields: a template edit that splices a value
    as text fails here, at build time, instead of on a node."""
    if not text.startswith("#cloud-config\n"):
        raise ValueError("user-data must start with #cloud-config")
    doc = yaml.safe_load(text)
    ok = (
        isinstance(doc, dict)
        and doc.get("hostname") == context["hostname"]
        and isinstance(doc.get("users"), list)
        and doc["users"][0].get("name") == context["user"]
        and doc["users"][0].get("ssh_authorized_keys") == context["ssh_keys"]
    )
    if not ok:
        raise ValueError("rendered user-data does not round-trip its values")
