"""`agentctl bundle build` for real: pip-made wheels, a dpkg-made .deb, an inventory, a key;
then the bundle is checked with the tools a node has (sha256sum, apt, pip in a fresh venv)."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import jsonschema
import pytest
import yaml

from agentctl.ctl.bundle import generate_keypair, verify_bundle
from agentctl.ctl.bundle.apt import parse_packages
from agentctl.ctl.bundle.build import PARTIAL_MARKER
from agentctl.ctl.bundle.wheels import parse_lock
from agentctl.ctl.envelope import ENVELOPE_SCHEMA

INVENTORY = """\
all:
  vars:
    ansible_user: ops
  hosts:
    node01:
      ansible_become_password: hunter2-secret
    gpu2.dc.example:
      agentctl_install_root: /srv/agentctl
"""


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "inventory.yml"
    path.write_text(INVENTORY)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_full_build_with_every_part(
    cli,
    tmp_path: Path,
    wheelhouse: Path,
    deb_dir: Path,
    inventory: Path,
    operator_pubkey: Path,
    signing_key: Path,
) -> None:
    out = tmp_path / "bundle"
    res = cli(
        "--json",
        "bundle",
        "build",
        "--out",
        str(out),
        "-i",
        str(inventory),
        "--wheelhouse",
        str(wheelhouse),
        "--debs",
        str(deb_dir),
        "--ssh-pubkey",
        str(operator_pubkey),
        "--sign-key",
        str(signing_key),
        "--tar",
    )
    assert res.code == 0, res.stdout + res.stderr
    doc = res.json
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    data = doc["data"]
    assert doc["meta"]["schema"] == "agentctl.bundle.build/1" and data["signed"] is True
    assert data["contents"]["seeds"] == ["node01", "gpu2.dc.example"]
    assert data["archive"] == str(tmp_path / "bundle.tar")
    assert not (tmp_path / "bundle.partial").exists()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == "agentctl.bundle/1"
    assert manifest["target"]["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and p.name not in ("manifest.json", "SHA256SUMS", "SHA256SUMS.sig")
    }
    assert set(listed) == on_disk
    for path, entry in listed.items():
        assert (
            entry["sha256"] == sha256(out / path) and entry["size"] == (out / path).stat().st_size
        )

    # the lock pins every wheel there, by the wheel's real hash
    lock = parse_lock((out / "wheels" / "requirements.lock").read_text())
    wheels = sorted((out / "wheels").glob("*.whl"))
    assert {"agentctl", "httpx", "idna"} <= set(lock)
    assert sorted(d for _, ds in lock.values() for d in ds) == sorted(sha256(w) for w in wheels)

    # what a node without agentctl can check
    res_sums = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=out)
    assert res_sums.returncode == 0
    assert verify_bundle(out, signing_key.with_name("bundle-key.pub")).signature == "verified"
    res = cli("bundle", "verify", str(tmp_path / "bundle.tar"))
    assert res.code == 0, res.stderr

    # seeds: YAML with the inventory's user and install root, the key, and no secret
    user_data = (out / "seed" / "gpu2.dc.example" / "user-data").read_text()
    seed = yaml.safe_load(user_data)
    assert seed["hostname"] == "gpu2" and seed["fqdn"] == "gpu2.dc.example"
    assert seed["users"][0]["name"] == "ops"
    assert seed["users"][0]["ssh_authorized_keys"] == [operator_pubkey.read_text().strip()]
    assert seed["runcmd"][0][1] == "/srv/agentctl/bundle"
    assert (
        "BEGIN PUBLIC KEY"
        in {f["path"]: f for f in seed["write_files"]}["/etc/agentctl/bundle.pub"]["content"]
    )
    everything = b"".join(p.read_bytes() for p in (out / "seed").rglob("*") if p.is_file())
    assert b"hunter2-secret" not in everything and b"PRIVATE" not in everything
    assert yaml.safe_load((out / "seed" / "node01" / "meta-data").read_text()) == {
        "instance-id": "iid-agentctl-node01",
        "local-hostname": "node01",
    }
    assert (out / "playbooks" / "templates" / "cloud-init" / "user-data.j2").is_file()
    assert not list((out / "playbooks").rglob("*.py"))


def test_apt_index_matches_dpkg_scanpackages_and_apt_reads_it(
    cli, tmp_path: Path, wheelhouse: Path, deb_dir: Path
) -> None:
    out = tmp_path / "bundle"
    res = cli(
        "bundle",
        "build",
        "--out",
        str(out),
        "--wheelhouse",
        str(wheelhouse),
        "--debs",
        str(deb_dir),
    )
    assert res.code == 0, res.stderr
    apt = out / "apt"
    (ours,) = parse_packages((apt / "Packages").read_text())
    assert ours["Package"] == "agentctl-test-tool" and ours["Version"] == "2:1.4-3"
    assert ours["Filename"] == "./agentctl-test-tool_1.4-3_all.deb"
    deb = apt / "agentctl-test-tool_1.4-3_all.deb"
    assert ours["SHA256"] == sha256(deb) and ours["Size"] == str(deb.stat().st_size)
    assert ours["MD5sum"] == hashlib.md5(deb.read_bytes()).hexdigest()
    assert gzip.decompress((apt / "Packages.gz").read_bytes()) == (apt / "Packages").read_bytes()
    release = (apt / "Release").read_text()
    assert (
        f" {sha256(apt / 'Packages.gz')} {(apt / 'Packages.gz').stat().st_size} Packages.gz"
        in release
    )

    scan = shutil.which("dpkg-scanpackages")
    if scan:
        res_scan = subprocess.run([scan, "."], cwd=apt, capture_output=True, text=True, check=True)
        (theirs,) = parse_packages(res_scan.stdout)
        assert ours == theirs

    if shutil.which("apt-get") is None:
        pytest.skip("apt-get not installed")
    root = tmp_path / "aptroot"
    for sub in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "state/lists/partial"):
        (root / sub).mkdir(parents=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True)
    (root / "etc/apt/sources.list").write_text(f"deb [trusted=yes] file:{apt} ./\n")
    (root / "status").write_text("")
    opts = [
        f"-oDir::Etc={root}/etc/apt",
        f"-oDir::State={root}/state",
        f"-oDir::State::status={root}/status",
        f"-oDir::Cache={root}/cache",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root",
    ]
    res_apt = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
    assert res_apt.returncode == 0, res_apt.stdout + res_apt.stderr
    dl = tmp_path / "dl"
    dl.mkdir()
    res_apt = subprocess.run(
        ["apt-get", *opts, "download", "agentctl-test-tool"], cwd=dl, capture_output=True, text=True
    )
    assert res_apt.returncode == 0, res_apt.stdout + res_apt.stderr
    (fetched,) = dl.glob("*.deb")
    assert sha256(fetched) == sha256(deb)


def test_a_deb_read_without_dpkg_gives_the_same_control(deb_dir: Path) -> None:
    from agentctl.ctl.bundle.debs import read_control

    (deb,) = deb_dir.glob("*.deb")
    assert read_control(deb, use_dpkg=False) == read_control(deb, use_dpkg=True)


def test_out_is_never_clobbered_by_accident(cli, tmp_path: Path, wheelhouse: Path) -> None:
    out = tmp_path / "bundle"
    args = ["bundle", "build", "--out", str(out), "--wheelhouse", str(wheelhouse)]
    assert cli(*args).code == 0
    first = (out / "manifest.json").read_text()
    res = cli(*args)
    assert res.code == 2 and "--force" in res.stderr
    assert (out / "manifest.json").read_text() == first
    assert cli(*args, "--force").code == 0
    assert verify_bundle(out)
    assert cli(*args, "--force", "--tar").code == 0
    shutil.rmtree(out)
    res = cli(*args, "--tar")  # the archive is not replaced silently either
    assert res.code == 2 and "bundle.tar exists" in res.stderr

    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    res = cli("bundle", "build", "--out", str(precious), "--wheelhouse", str(wheelhouse), "--force")
    assert res.code == 2 and "refusing" in res.stderr
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_failed_build_leaves_no_bundle(
    cli, tmp_path: Path, wheelhouse: Path, deb_dir: Path
) -> None:
    bad = tmp_path / "debs"
    shutil.copytree(deb_dir, bad)
    (bad / "zz-broken.deb").write_bytes(b"!<arch>\nnot really a deb")
    out = tmp_path / "bundle"
    res = cli(
        "bundle", "build", "--out", str(out), "--wheelhouse", str(wheelhouse), "--debs", str(bad)
    )
    assert res.code == 2 and "zz-broken.deb" in res.stderr
    assert not out.exists() and not (tmp_path / "bundle.partial").exists()

    # a leftover .partial of ours is cleared; a directory of someone else's is not touched
    stale = tmp_path / "bundle.partial"
    stale.mkdir()
    (stale / PARTIAL_MARKER).write_text("")
    assert cli("bundle", "build", "--out", str(out), "--wheelhouse", str(wheelhouse)).code == 0
    other = tmp_path / "b2.partial"
    other.mkdir()
    (other / "keep").write_text("mine")
    res = cli("bundle", "build", "--out", str(tmp_path / "b2"), "--wheelhouse", str(wheelhouse))
    assert res.code == 2 and (other / "keep").read_text() == "mine"


def test_pip_failure_leaves_no_bundle(
    cli, tmp_path: Path, agentctl_wheel: Path, wheelhouse: Path
) -> None:
    """pip download for a platform nothing is built for fails; nothing is left behind."""
    out = tmp_path / "bundle"
    res = cli(
        "bundle",
        "build",
        "--out",
        str(out),
        "--agentctl-wheel",
        str(agentctl_wheel),
        "--platform",
        "no_such_platform_x",
    )
    assert res.code == 1 and "pip download failed" in res.stderr
    assert not out.exists() and not (tmp_path / "bundle.partial").exists()


def test_seeds_need_a_key_and_a_sane_inventory(
    cli, tmp_path: Path, wheelhouse: Path, inventory: Path, operator_pubkey: Path
) -> None:
    out = tmp_path / "bundle"
    base = ["bundle", "build", "--out", str(out), "--wheelhouse", str(wheelhouse)]
    res = cli(*base, "-i", str(inventory))
    assert res.code == 2 and "--ssh-pubkey" in res.stderr
    private = operator_pubkey.with_name("operator")
    res = cli(*base, "-i", str(inventory), "--ssh-pubkey", str(private))
    assert res.code == 2 and "private key" in res.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts:\n    node_01:\n      ansible_user: ops\n")
    res = cli(*base, "-i", str(bad), "--ssh-pubkey", str(operator_pubkey))
    assert res.code == 2 and "bad.yml:3" in res.stderr and "hostname" in res.stderr
    res = cli("-i", str(inventory), "-l", "node01", *base, "--ssh-pubkey", str(operator_pubkey))
    assert res.code == 0, res.stderr
    assert [p.name for p in (out / "seed").iterdir()] == ["node01"]
    assert not out.with_name("bundle.partial").exists()


def test_download_for_another_python_and_platform(
    cli, tmp_path: Path, agentctl_wheel: Path, wheelhouse: Path
) -> None:
    """The real pip download path, for CPython 3.12 on manylinux2014: every serving package
    and its dependencies arrive as wheels for that target, pinned in the lock."""
    out = tmp_path / "bundle"
    res = cli(
        "--json",
        "bundle",
        "build",
        "--out",
        str(out),
        "--agentctl-wheel",
        str(agentctl_wheel),
        "--python",
        "3.12",
        "--platform",
        "manylinux2014_x86_64",
    )
    if res.code == 1 and "pip download failed" in res.stdout + res.stderr:
        pytest.skip("the package index has no cp312 manylinux2014 wheels for the serving stack")
    assert res.code == 0, res.stdout + res.stderr
    target = res.json["data"]["target"]
    assert target == {
        "python": "3.12",
        "implementation": "cp",
        "abi": "cp312",
        "platform": "manylinux2014_x86_64",
        "platforms": ["manylinux2014_x86_64"],
    }
    lock = parse_lock((out / "wheels" / "requirements.lock").read_text())
    serving = {"fastapi", "uvicorn", "httpx", "pyzmq", "msgpack", "prometheus-client"}
    assert serving | {"pydantic", "pyyaml", "agentctl", "starlette", "pydantic-core"} <= set(lock)
    assert "typer" not in lock and "paramiko" not in lock  # control-side deps stay home
    binary = [w.name for w in (out / "wheels").glob("pydantic_core-*.whl")]
    assert binary and all("cp312" in n and "manylinux" in n for n in binary)
    assert verify_bundle(out)


def test_a_fresh_venv_installs_from_the_bundle_offline(
    cli, tmp_path: Path, wheelhouse: Path
) -> None:
    """What provisioning does on a node: pip with no index, hashes required, no resolution."""
    out = tmp_path / "bundle"
    assert cli("bundle", "build", "--out", str(out), "--wheelhouse", str(wheelhouse)).code == 0
    verified = verify_bundle(out)
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)  # this pip installs into it (--python): no ensurepip wait
    python = env / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index"]
    install += ["--find-links", "wheels"]
    install += ["--require-hashes", "--no-deps", "--disable-pip-version-check"]

    tampered = out.parent / "tampered.lock"
    text = verified.lock.read_text()
    line = next(line for line in text.splitlines() if line.startswith("agentctl=="))
    digest = line.rsplit(":", 1)[1]
    tampered.write_text(line.replace(digest, "0" * 64) + "\n")
    res = subprocess.run([*install, "-r", str(tampered)], cwd=out, capture_output=True, text=True)
    assert res.returncode != 0 and "HASH" in (res.stdout + res.stderr).upper()

    res = subprocess.run(
        [*install, "-r", str(verified.lock)], cwd=out, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    probe = "import agentctl.serving.cluster as c, httpx; print(c.__name__, httpx.__version__)"
    res = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("agentctl.serving.cluster ")
    # --no-deps kept the control side off the node
    res = subprocess.run([str(python), "-c", "import paramiko"], capture_output=True)
    assert res.returncode != 0


def test_keygen_then_build_signed_then_verify_by_cli(cli, tmp_path: Path, wheelhouse: Path) -> None:
    pair = generate_keypair(tmp_path / "k")
    out = tmp_path / "bundle"
    res = cli(
        "bundle",
        "build",
        "--out",
        str(out),
        "--wheelhouse",
        str(wheelhouse),
        "--sign-key",
        str(pair.private_key),
    )
    assert res.code == 0, res.stderr
    assert pair.fingerprint in res.stdout
    res = cli("bundle", "verify", str(out), "--pubkey", str(pair.public_key))
    assert res.code == 0 and "verified" in res.stdout
    (out / "SHA256SUMS.sig").unlink()
    res = cli("bundle", "verify", str(out), "--pubkey", str(pair.public_key))
    assert res.code == 6 and "SHA256SUMS.sig" in res.stderr
