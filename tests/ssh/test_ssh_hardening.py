"""The SSH layer under hostile or unusual conditions, against real sshd on loopback.

Garbage known_hosts, invalid addresses and ssh_config values, RSA host keys, MaxAuthTries,
IdentitiesOnly, encrypted keys, paramiko's logging, ProxyJump chains, and aborting connections
that are still being set up.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import children
import pytest
import yaml

from agentctl.ctl.errors import AuthError, ConfigError, HostKeyError, UnreachableError
from agentctl.ctl.fleet import _free_port, find_sshd, keygen
from agentctl.ctl.ssh import (
    Aborter,
    ConnectOptions,
    HostValues,
    KnownHosts,
    SSHConnector,
    Target,
    load_ssh_config,
    resolve_target,
)
from agentctl.ctl.ssh.transport import MAX_KEYS, connect_chain

pytestmark = pytest.mark.timeout(120)

OPTS = ConnectOptions(use_agent=False, look_for_keys=False, connect_timeout=3)


def _target(fleet, node, *keys: str) -> Target:
    return Target(node.name, node.address, node.port, fleet.user, keys or (str(fleet.client_key),))


@pytest.fixture
def mute_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (no SSH banner)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield srv.getsockname()[1]
    srv.close()


# --- untranslated errors: known_hosts, addresses, ssh_config ---------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a known_hosts file\n",
        b"h ssh-ed25519 !!!notbase64!!!\n",
        b"\xff\xfe junk\n",
        b"@cert-authority *.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI\n",
    ],
)
def test_garbage_known_hosts_is_a_config_error_naming_the_file(tmp_path, content):
    p = tmp_path / "kh"
    p.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        KnownHosts(p)
    assert str(p) in info.value.message


@pytest.mark.parametrize("address", ["a..b", "x" * 70 + ".example"])
def test_bad_hostname_is_unreachable_not_a_crash(tmp_path, address):
    """The idna codec rejects empty and over-long labels with UnicodeError (a ValueError)."""
    kh = tmp_path / "kh"
    kh.write_text("")
    with pytest.raises(UnreachableError, match="invalid address"):
        SSHConnector(Target("bad", address, 22, "root"), KnownHosts(kh), OPTS)


def test_non_numeric_port_in_ssh_config_is_a_config_error(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host gpu1\n    HostName 10.0.0.1\n    Port abc\n")
    lookup, _warnings = load_ssh_config(config)
    with pytest.raises(ConfigError, match=r"Port 'abc' for host gpu1"):
        resolve_target(HostValues("gpu1"), ssh_config=lookup)


# --- paramiko's transport thread must not print tracebacks -----------------------------------


def test_no_paramiko_traceback_on_stderr_for_mute_host(tmp_path, mute_server):
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from agentctl.ctl.connect import Connections  # what the CLI imports
        from agentctl.ctl.ssh import ConnectOptions, KnownHosts, SSHConnector, Target
        from agentctl.ctl.errors import UnreachableError
        kh = Path({str(tmp_path / "kh")!r}); kh.write_text("")
        try:
            SSHConnector(Target("mute", "127.0.0.1", {mute_server}, "root"), KnownHosts(kh),
                         ConnectOptions(use_agent=False, look_for_keys=False, banner_timeout=1))
        except UnreachableError:
            pass
        """
    )
    err = children.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    ).stderr
    assert "Traceback" not in err, err


# --- host key types: RSA, and a key type not recorded for a known host -----------------------


@pytest.fixture
def rsa_and_ed25519_sshd(tmp_path) -> Iterator[tuple[int, Path]]:
    """An sshd offering both an RSA and an ed25519 host key; yields (port, its directory)."""
    sshd = find_sshd()
    if sshd is None:
        pytest.skip("no sshd")
    d = tmp_path / "rsa"
    d.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(d / "hk_rsa")],
        check=True,
    )
    keygen(d / "hk_ed", comment="ed")
    keygen(d / "client", comment="client")
    (d / "ak").write_text((d / "client.pub").read_text())
    port = _free_port("127.0.0.1")
    (d / "cfg").write_text(
        f"ListenAddress 127.0.0.1:{port}\nHostKey {d}/hk_rsa\nHostKey {d}/hk_ed\n"
        f"PidFile {d}/pid\nAuthorizedKeysFile {d}/ak\nUsePAM no\nStrictModes no\n"
        "PasswordAuthentication no\n"
    )
    # its own group: stopping it stops its per-connection children too
    proc = children.start([sshd, "-D", "-e", "-f", str(d / "cfg")], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port, d
    finally:
        children.stop(proc)


def test_known_rsa_key_is_used_when_host_also_has_ed25519(rsa_and_ed25519_sshd):
    """known_hosts records `ssh-rsa`; OpenSSH >= 8.8 negotiates it as rsa-sha2-512/256."""
    port, d = rsa_and_ed25519_sshd
    rsa = (d / "hk_rsa.pub").read_text().split()
    (d / "kh").write_text(f"[127.0.0.1]:{port} {rsa[0]} {rsa[1]}\n")
    target = Target("rsahost", "127.0.0.1", port, "root", (str(d / "client"),))
    c = SSHConnector(target, KnownHosts(d / "kh"), OPTS)
    try:
        assert c.run(["true"]).exit_status == 0
    finally:
        c.close()


def test_key_of_an_unrecorded_type_is_unknown_not_changed(small_fleet, tmp_path):
    """The node offers only ed25519; known_hosts has only an RSA key for it: as OpenSSH says,
    a key of a different type for a known host, not a possible interception."""
    node = small_fleet.nodes[0]
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "other")],
        check=True,
    )
    rsa = (tmp_path / "other.pub").read_text().split()
    kh = tmp_path / "kh"
    kh.write_text(f"{node.known_hosts_key} {rsa[0]} {rsa[1]}\n")
    with pytest.raises(HostKeyError) as info:
        SSHConnector(_target(small_fleet, node), KnownHosts(kh), OPTS)
    assert info.value.changed is False
    assert "unknown key type for a known host" in info.value.message
    assert "intercept" not in info.value.message


def test_different_key_of_the_same_type_stays_the_loud_changed_case(small_fleet, tmp_path):
    node = small_fleet.nodes[0]
    keygen(tmp_path / "other", comment="other")
    other = (tmp_path / "other.pub").read_text().split()
    kh = tmp_path / "kh"
    kh.write_text(f"{node.known_hosts_key} {other[0]} {other[1]}\n")
    with pytest.raises(HostKeyError) as info:
        SSHConnector(_target(small_fleet, node), KnownHosts(kh), OPTS)
    assert info.value.changed is True
    assert "CHANGED" in info.value.message


# --- authentication: MaxAuthTries, the key cap, IdentitiesOnly, passphrases ------------------


def _wrong_keys(tmp_path: Path, count: int) -> list[str]:
    keys = []
    for i in range(count):
        k = tmp_path / f"wrong{i}"
        keygen(k, comment="wrong")
        keys.append(str(k))
    return keys


def test_too_many_rejected_keys_is_an_auth_error(small_fleet, tmp_path):
    """sshd hangs up after MaxAuthTries (6) refused keys: that is exit 5, not unreachable."""
    kh = small_fleet.write_known_hosts(tmp_path / "kh")
    keys = _wrong_keys(tmp_path, MAX_KEYS + 1)
    with pytest.raises(AuthError) as info:
        SSHConnector(_target(small_fleet, small_fleet.nodes[0], *keys), KnownHosts(kh), OPTS)
    # The key past the cap is never offered.
    last = keys[-1]
    assert last not in info.value.message or f"{last} (over the limit" in info.value.message


def test_right_key_after_refused_ones_still_logs_in(small_fleet, tmp_path):
    kh = small_fleet.write_known_hosts(tmp_path / "kh")
    keys = [*_wrong_keys(tmp_path, 3), str(small_fleet.client_key)]
    c = SSHConnector(_target(small_fleet, small_fleet.nodes[0], *keys), KnownHosts(kh), OPTS)
    try:
        assert c.run(["true"]).ok
    finally:
        c.close()


@pytest.mark.parametrize("identities_only", [False, True])
def test_identities_only_offers_only_the_configured_key(
    small_fleet, tmp_path, monkeypatch, identities_only
):
    """The explicit key is wrong and ~/.ssh/id_ed25519 is right: without IdentitiesOnly the
    default key logs in; with `IdentitiesOnly yes` (ssh_config) it is never offered."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    for suffix in ("", ".pub"):
        src = Path(str(small_fleet.client_key) + suffix)
        (home / ".ssh" / f"id_ed25519{suffix}").write_bytes(src.read_bytes())
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    wrong = _wrong_keys(tmp_path, 1)[0]
    node = small_fleet.nodes[0]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host n\n    HostName {node.address}\n    Port {node.port}\n"
        f"    User {small_fleet.user}\n    IdentityFile {wrong}\n"
        f"    IdentitiesOnly {'yes' if identities_only else 'no'}\n"
    )
    lookup, _ = load_ssh_config(config)
    target = resolve_target(HostValues("n"), ssh_config=lookup)
    assert target.identities_only is identities_only
    kh = small_fleet.write_known_hosts(tmp_path / "kh")
    opts = ConnectOptions(use_agent=False, look_for_keys=True, connect_timeout=3)
    if identities_only:
        with pytest.raises(AuthError) as info:
            SSHConnector(target, KnownHosts(kh), opts)
        assert "id_ed25519" not in info.value.message
    else:
        SSHConnector(target, KnownHosts(kh), opts).close()


def test_encrypted_key_needs_a_passphrase_and_works_with_one(small_fleet, tmp_path):
    key = tmp_path / "locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "s3cret pass", "-f", str(key)], check=True
    )
    with small_fleet.authorized_keys.open("a") as fh:
        fh.write((tmp_path / "locked.pub").read_text())
    kh = KnownHosts(small_fleet.write_known_hosts(tmp_path / "kh"))
    target = _target(small_fleet, small_fleet.nodes[0], str(key))
    with pytest.raises(AuthError) as info:
        SSHConnector(target, kh, OPTS)
    assert "encrypted" in info.value.message
    assert "AGENTCTL_KEY_PASSPHRASE" in (info.value.hint or "")
    opts = ConnectOptions(
        use_agent=False, look_for_keys=False, connect_timeout=3, key_passphrase="s3cret pass"
    )
    c = SSHConnector(target, kh, opts)
    try:
        assert c.run(["true"]).ok
    finally:
        c.close()


def test_cli_reads_the_key_passphrase_from_the_environment(cli, small_fleet, tmp_path, monkeypatch):
    key = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pw-42", "-f", str(key)], check=True)
    with small_fleet.authorized_keys.open("a") as fh:
        fh.write((tmp_path / "locked.pub").read_text())
    doc = small_fleet.inventory()
    for host in doc["all"]["hosts"].values():
        host["ansible_ssh_private_key_file"] = str(key)
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(small_fleet.write_known_hosts(tmp_path / "kh")))
    res = cli("-i", str(inv), "--limit", "edge01", "run", "--", "true")
    assert res.code == 5, res.stdout + res.stderr
    monkeypatch.setenv("AGENTCTL_KEY_PASSPHRASE", "pw-42")
    res = cli("-i", str(inv), "--limit", "edge01", "--json", "run", "--", "true")
    assert res.code == 0, res.stdout + res.stderr
    assert "pw-42" not in res.stdout + res.stderr


# --- ProxyJump and ansible_host resolve the way ssh(1) does ----------------------------------


def test_multi_hop_chain_ignores_intermediate_hops_own_proxyjump():
    """ssh -J a,b runs `ssh -J a -W %h:%p b`: b's own ProxyJump is overridden, a's applies."""
    cfg = {
        "a": {"hostname": "10.0.0.1", "proxyjump": "z"},
        "b": {"hostname": "10.0.0.2", "proxyjump": "c"},
        "c": {"hostname": "10.0.0.3"},
        "z": {"hostname": "10.0.0.26"},
    }
    t = resolve_target(HostValues("target", proxy_jump="a,b"), ssh_config=lambda n: cfg.get(n, {}))
    assert [j.name for j in t.jumps] == ["z", "a", "b"]
    assert [j.hostname for j in t.jumps] == ["10.0.0.26", "10.0.0.1", "10.0.0.2"]
    assert all(j.jumps == () for j in t.jumps)


def test_ansible_host_is_looked_up_in_ssh_config():
    """Ansible runs `ssh <ansible_host>`: that name's Host block applies, HostName included."""
    cfg = {"gpu-7.internal": {"hostname": "10.1.2.7", "user": "ops", "port": "2222"}}
    t = resolve_target(
        HostValues("gpu7", address="gpu-7.internal"), ssh_config=lambda n: cfg.get(n, {})
    )
    assert (t.hostname, t.port, t.user) == ("10.1.2.7", 2222, "ops")
    assert t.known_hosts_key == "[10.1.2.7]:2222"


def test_ansible_host_alias_resolved_through_ssh_config_end_to_end(
    cli, small_fleet, tmp_path, monkeypatch
):
    node = small_fleet.nodes[1]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host edge-alias\n    HostName {node.address}\n    Port {node.port}\n"
        f"    User {small_fleet.user}\n    IdentityFile {small_fleet.client_key}\n"
    )
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"edge": {"ansible_host": "edge-alias"}}}}))
    monkeypatch.setenv("AGENTCTL_USE_SSH_CONFIG", "true")
    monkeypatch.setenv("AGENTCTL_SSH_CONFIG", str(config))
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(small_fleet.write_known_hosts(tmp_path / "kh")))
    res = cli("-i", str(inv), "run", "--", "echo", "via-ansible-host")
    assert res.code == 0, res.stdout + res.stderr
    assert "via-ansible-host" in res.stdout


# --- Aborter: cutting short connections still being set up ---------------------------------


def _closed_port() -> int:
    """A port nothing listens on: connecting there is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_abort_interrupts_a_handshake_in_progress(tmp_path, mute_server):
    """The banner never comes and its timeout outlasts the test's: only abort() can end it
    (`aborted`, not a timeout, is the error)."""
    kh = KnownHosts(tmp_path / "kh")
    opts = ConnectOptions(use_agent=False, look_for_keys=False, banner_timeout=3600)
    aborter = Aborter()
    threading.Timer(0.5, aborter.abort).start()
    with pytest.raises(UnreachableError, match="aborted"):
        connect_chain(Target("mute", "127.0.0.1", mute_server, "root"), kh, opts, aborter)
    # Once aborted, every later attempt fails before it connects: a refused port would say
    # "refused", not "aborted".
    with pytest.raises(UnreachableError, match="aborted"):
        connect_chain(Target("gone", "127.0.0.1", _closed_port(), "root"), kh, opts, aborter)


def test_abort_interrupts_a_tcp_connect_in_progress(tmp_path):
    """A full accept queue makes the kernel drop SYNs: connect() hangs until its timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.2)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this kernel accepted past the backlog; cannot hold a connect open")
        except TimeoutError:
            pass
        except OSError:
            pytest.skip("cannot hold a TCP connect open here")
        finally:
            probe.close()
        # the connect timeout outlasts the test's: only abort() can end the connect
        opts = ConnectOptions(use_agent=False, look_for_keys=False, connect_timeout=3600)
        aborter = Aborter()
        threading.Timer(0.5, aborter.abort).start()
        with pytest.raises(UnreachableError, match="aborted"):
            connect_chain(
                Target("full", "127.0.0.1", port, "root"),
                KnownHosts(tmp_path / "kh"),
                opts,
                aborter,
            )
    finally:
        for s in fillers:
            s.close()
        srv.close()


def test_abort_does_not_touch_established_connections(small_fleet, tmp_path):
    kh = KnownHosts(small_fleet.write_known_hosts(tmp_path / "kh"))
    aborter = Aborter()
    transports = connect_chain(_target(small_fleet, small_fleet.nodes[0]), kh, OPTS, aborter)
    try:
        aborter.abort()
        assert all(t.is_active() for t in transports)
    finally:
        for t in reversed(transports):
            t.close()
