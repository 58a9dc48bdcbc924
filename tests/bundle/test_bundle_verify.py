"""Verification catches every kind of tampering, and names the file; signatures and keys.

The bundle here is built offline by the real build code from a small hand-made wheel (a real
zip with real metadata), so these tests need no package index.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from agentctl.ctl.bundle import (
    BuildOptions,
    BundleVerificationError,
    Target,
    build_bundle,
    extract_bundle,
    generate_keypair,
    load_private_key,
    load_public_key,
    verify_bundle,
    write_tar,
)
from agentctl.ctl.bundle.hashing import sha256_file
from agentctl.ctl.bundle.manifest import manifest_to_json, parse_manifest, render_sums
from agentctl.ctl.bundle.seed import SeedHost
from agentctl.ctl.envelope import ENVELOPE_SCHEMA
from agentctl.ctl.errors import ExitCode, UsageError, VerificationError

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPWbR1SvWheKc88jLBdHjBh+Q1Jwls1oMsS3jGxugn0l op@x"


def make_wheel(directory: Path, name: str, version: str, requires: list[str]) -> Path:
    """A minimal but genuine wheel: dist-info METADATA, WHEEL and one module."""
    path = directory / f"{name}-{version}-py3-none-any.whl"
    meta = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
    meta += [f"Requires-Dist: {r}\n" for r in requires]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{name}-{version}.dist-info/METADATA", "".join(meta))
        zf.writestr(f"{name}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
    return path


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, deb_dir: Path) -> tuple[Path, Path]:
    """(bundle, public key file): a signed bundle with wheels, an apt repo and a seed."""
    root = tmp_path_factory.mktemp("signed")
    house = root / "house"
    house.mkdir()
    make_wheel(house, "agentctl", "9.9.9", ["fastapi>=0.110", "typer>=0.29"])
    make_wheel(house, "fastapi", "0.200.0", [])
    pair = generate_keypair(root / "key")
    seed = SeedHost("node01", "node01", None, "ops", (PUB,), "/opt/agentctl/bundle")
    build_bundle(
        BuildOptions(
            out=root / "bundle",
            target=Target(python="3.11", platform="linux_x86_64"),
            wheelhouse=house,
            debs=deb_dir,
            seeds=[seed],
            sign_key=load_private_key(pair.private_key),
        )
    )
    return root / "bundle", pair.public_key


@pytest.fixture
def bundle(signed: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(signed[0], tmp_path / "bundle"))


@pytest.fixture
def pubkey(signed: tuple[Path, Path]) -> Path:
    return signed[1]


def problems_of(bundle: Path, pubkey: Path | None = None) -> dict[str, str]:
    with pytest.raises(BundleVerificationError) as err:
        verify_bundle(bundle, pubkey)
    assert err.value.exit_code == ExitCode.VERIFICATION == 6
    return {p.path: p.message for p in err.value.problems}


def resign_without_key(bundle: Path) -> None:
    """What an attacker without the key can do: recompute SHA256SUMS over the current files."""
    digests = {
        str(p.relative_to(bundle)): sha256_file(p)
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.name not in ("SHA256SUMS", "SHA256SUMS.sig")
    }
    (bundle / "SHA256SUMS").write_text(render_sums(digests))


def test_an_untouched_bundle_verifies_with_and_without_the_key(bundle: Path, pubkey: Path) -> None:
    verified = verify_bundle(bundle, pubkey)
    assert verified.signature == "verified" and verified.key_fingerprint
    listed = {f.path for f in verified.manifest.files}
    assert set(verified.checked) == listed | {"manifest.json"}
    assert verified.lock == bundle / "wheels" / "requirements.lock"
    assert verified.apt_dir == bundle / "apt"
    assert verified.seed_dir("node01") == bundle / "seed" / "node01"
    assert verify_bundle(bundle).signature == "unchecked"
    (bundle / "SHA256SUMS.sig").unlink()
    assert verify_bundle(bundle).signature == "absent"


def test_a_flipped_byte_is_named(bundle: Path, pubkey: Path) -> None:
    wheel = bundle / "wheels" / "fastapi-0.200.0-py3-none-any.whl"
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    wheel.write_bytes(bytes(data))
    problems = problems_of(bundle, pubkey)
    assert list(problems) == ["wheels/fastapi-0.200.0-py3-none-any.whl"]
    assert "SHA256SUMS says" in problems["wheels/fastapi-0.200.0-py3-none-any.whl"]


def test_a_missing_file_is_named(bundle: Path) -> None:
    (bundle / "apt" / "Packages.gz").unlink()
    assert problems_of(bundle) == {"apt/Packages.gz": "missing (listed in SHA256SUMS)"}


def test_an_extra_file_is_refused(bundle: Path, pubkey: Path) -> None:
    (bundle / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"PK")
    problems = problems_of(bundle, pubkey)
    assert problems == {"wheels/evil-1.0-py3-none-any.whl": "not listed in SHA256SUMS (extra file)"}


def test_a_symlink_is_refused(bundle: Path) -> None:
    os.symlink("/etc/passwd", bundle / "playbooks" / "passwd")
    assert "symlink" in problems_of(bundle)["playbooks/passwd"]


def test_a_bad_signature_stops_before_anything_else(bundle: Path, pubkey: Path) -> None:
    sig = bundle / "SHA256SUMS.sig"
    data = bytearray(sig.read_bytes())
    data[0] ^= 0x80
    sig.write_bytes(bytes(data))
    (bundle / "extra").write_text("x")  # not reported: nothing is trusted past a bad signature
    with pytest.raises(BundleVerificationError) as err:
        verify_bundle(bundle, pubkey)
    assert [p.path for p in err.value.problems] == ["SHA256SUMS.sig"]
    assert err.value.checked == ()


def test_the_wrong_key_is_refused(bundle: Path, tmp_path: Path) -> None:
    other = generate_keypair(tmp_path / "other").public_key
    problems = problems_of(bundle, other)
    assert "does not match" in problems["SHA256SUMS.sig"]


def test_a_missing_signature_fails_when_a_key_is_given(bundle: Path, pubkey: Path) -> None:
    (bundle / "SHA256SUMS.sig").unlink()
    assert "must be signed" in problems_of(bundle, pubkey)["SHA256SUMS.sig"]


def test_recomputed_sums_fool_only_an_unkeyed_check(bundle: Path, pubkey: Path) -> None:
    """Without the key, SHA256SUMS only proves integrity; the signature proves origin."""
    (bundle / "wheels" / "requirements.lock").write_text("evil==1.0\n")
    manifest = parse_manifest((bundle / "manifest.json").read_text())
    problems = problems_of(bundle)  # the manifest still disagrees after SHA256SUMS is redone
    assert "wheels/requirements.lock" in problems
    entries = [
        f
        if f.path != "wheels/requirements.lock"
        else type(f)(f.path, sha256_file(bundle / f.path), 10)
        for f in manifest.files
    ]
    forged = type(manifest)(
        manifest.schema_version,
        manifest.agentctl_version,
        manifest.created_at,
        manifest.target,
        tuple(entries),
        manifest.contents,
    )
    (bundle / "manifest.json").write_text(manifest_to_json(forged))
    resign_without_key(bundle)
    assert verify_bundle(bundle).signature == "unchecked"
    assert list(problems_of(bundle, pubkey)) == ["SHA256SUMS.sig"]


def test_manifest_and_sums_must_agree(bundle: Path) -> None:
    doc = json.loads((bundle / "manifest.json").read_text())
    dropped = doc["files"].pop()["path"]
    doc["files"][0]["size"] += 1
    (bundle / "manifest.json").write_text(json.dumps(doc))
    resign_without_key(bundle)
    problems = problems_of(bundle)
    assert problems[dropped] == "in SHA256SUMS but not in manifest.json"
    assert "manifest.json says" in problems[doc["files"][0]["path"]]


def test_unsafe_names_in_sha256sums_are_refused(bundle: Path) -> None:
    sums = bundle / "SHA256SUMS"
    sums.write_text(sums.read_text() + f"{'0' * 64}  ../../etc/shadow\n")
    assert "../../etc/shadow" in problems_of(bundle)["SHA256SUMS"]


def test_verified_bundle_hands_out_listed_files_only(bundle: Path) -> None:
    verified = verify_bundle(bundle)
    assert verified.file("apt/Packages") == bundle / "apt" / "Packages"
    with pytest.raises(VerificationError):
        verified.file("../outside")


def test_stock_tools_check_the_same_bundle(bundle: Path, pubkey: Path) -> None:
    """A node without agentctl: sha256sum -c and openssl pkeyutl give the same verdict."""
    res = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True
    )
    assert res.returncode == 0, res.stdout
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pubkey), "-rawin"]
    cmd += ["-in", "SHA256SUMS", "-sigfile", "SHA256SUMS.sig"]
    res = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True)
    if "rawin" in res.stderr and res.returncode != 0:
        pytest.skip("this openssl has no -rawin (OpenSSL < 3)")
    assert res.returncode == 0, res.stderr
    (bundle / "SHA256SUMS").write_text((bundle / "SHA256SUMS").read_text() + "\n")
    assert subprocess.run(cmd, cwd=bundle, capture_output=True).returncode != 0


def test_the_seed_script_enables_apt_only_for_a_verified_bundle(
    bundle: Path, pubkey: Path, tmp_path: Path
) -> None:
    """The script cloud-init installs, run for real with paths under tmp_path."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    doc = yaml.safe_load((bundle / "seed" / "node01" / "user-data").read_text())
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    script = tmp_path / "agentctl-bundle-apt"
    script.write_text(files["/usr/local/sbin/agentctl-bundle-apt"])
    staged = tmp_path / "staged.list"
    staged.write_text(files["/etc/agentctl/agentctl-bundle.list"])
    active = tmp_path / "active.list"

    def run(bundle_dir: Path, key: Path | None) -> int:
        argv = ["sh", str(script), str(bundle_dir), str(staged), str(active)]
        return subprocess.run([*argv, *([str(key)] if key else [])], capture_output=True).returncode

    assert run(tmp_path / "not-there-yet", pubkey) == 0 and not active.exists()
    assert run(bundle, generate_keypair(tmp_path / "k2").public_key) != 0
    assert not active.exists()
    assert run(bundle, pubkey) == 0
    assert active.read_text() == "deb [trusted=yes] file:/opt/agentctl/bundle/apt ./\n"
    active.unlink()
    with (bundle / "apt" / "Packages").open("ab") as fh:
        fh.write(b"\n")
    assert run(bundle, None) != 0 and not active.exists()


def test_tar_round_trip_and_hostile_members(bundle: Path, tmp_path: Path) -> None:
    archive = write_tar(bundle, tmp_path / "b.tar", mtime=0)
    out = extract_bundle(archive, tmp_path / "x")
    assert verify_bundle(out).manifest == verify_bundle(bundle).manifest
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(VerificationError, match="escape"):
        extract_bundle(evil, tmp_path / "y")
    assert not (tmp_path / "escape").exists()
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(VerificationError, match="not a regular file"):
        extract_bundle(link, tmp_path / "z")


def test_cli_verify_json_lists_problems_and_exits_6(cli, bundle: Path, pubkey: Path) -> None:
    res = cli("--json", "bundle", "verify", str(bundle), "--pubkey", str(pubkey))
    assert res.code == 0, res.stdout + res.stderr
    doc = res.json
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    assert doc["data"]["signature"] == "verified" and "manifest.json" in doc["data"]["checked"]

    (bundle / "apt" / "Release").write_text("tampered\n")
    res = cli("--json", "bundle", "verify", str(bundle), "--pubkey", str(pubkey))
    assert res.code == 6
    doc = res.json
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    assert doc["ok"] is False and doc["meta"]["schema"] == "agentctl.bundle.verify/1"
    assert [p["path"] for p in doc["data"]["problems"]] == ["apt/Release", "apt/Release"]
    assert doc["errors"][0]["kind"] == "verification"
    assert "apt/Release" in doc["errors"][0]["message"]

    res = cli("bundle", "verify", str(bundle))
    assert res.code == 6 and "apt/Release" in res.stderr


def test_cli_verify_reads_a_tar(cli, signed: tuple[Path, Path], tmp_path: Path) -> None:
    archive = write_tar(signed[0], tmp_path / "bundle.tar", mtime=0)
    res = cli("bundle", "verify", str(archive), "--pubkey", str(signed[1]))
    assert res.code == 0, res.stderr
    assert "verified" in res.stdout


# --- keys --------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_can_read(cli, tmp_path: Path) -> None:
    res = cli("--json", "bundle", "keygen", "--out", str(tmp_path / "k"))
    assert res.code == 0, res.stderr
    data = res.json["data"]
    assert stat.S_IMODE(os.stat(data["private_key"]).st_mode) == 0o600
    assert data["fingerprint"].startswith("SHA256:")
    load_private_key(Path(data["private_key"]))
    load_public_key(Path(data["public_key"]))
    before = (tmp_path / "k").read_bytes()
    res = cli("bundle", "keygen", "--out", str(tmp_path / "k"))
    assert res.code == 2 and (tmp_path / "k").read_bytes() == before


def test_openssh_keys_sign_and_verify(bundle: Path, tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    private = load_private_key(key)
    data = (bundle / "SHA256SUMS").read_bytes()
    (bundle / "SHA256SUMS.sig").write_bytes(private.sign(data))
    assert verify_bundle(bundle, key.with_name("id_ed25519.pub")).signature == "verified"
    assert verify_bundle(bundle, private.public_key()).signature == "verified"

    enc = tmp_path / "enc"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pw", "-f", str(enc)], check=True)
    with pytest.raises(UsageError, match="password") as err:
        load_private_key(enc)
    assert "--sign-key-passphrase-env" in (err.value.hint or "")
    load_private_key(enc, b"pw")
    ecdsa = tmp_path / "ecdsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(ecdsa)], check=True)
    with pytest.raises(UsageError, match="Ed25519"):
        load_private_key(ecdsa)
    with pytest.raises(UsageError, match="Ed25519"):
        load_public_key(ecdsa.with_name("ecdsa.pub"))
