"""Pure parts of bundles: manifest and SHA256SUMS text, the lock, Packages stanzas, seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agentctl.ctl.bundle.apt import (
    ControlError,
    DebChecksums,
    deb_filename,
    package_stanza,
    parse_control,
    parse_packages,
    render_release,
)
from agentctl.ctl.bundle.layout import SCHEMA_VERSION, check_relpath
from agentctl.ctl.bundle.manifest import (
    FileEntry,
    ManifestError,
    Target,
    build_manifest,
    manifest_to_json,
    parse_manifest,
    parse_sums,
    render_sums,
)
from agentctl.ctl.bundle.seed import (
    SeedHost,
    parse_authorized_keys,
    render_seed,
    seed_host,
    yaml_inline,
)
from agentctl.ctl.bundle.wheels import (
    LockError,
    is_native,
    parse_lock,
    parse_wheel_filename,
    pip_download_args,
    render_lock,
    serving_requirements,
)
from agentctl.ctl.errors import InventoryError, UsageError
from agentctl.ctl.inventory import Host, load_inventory

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inventory" / "good"
DIGEST_A = "a" * 64
DIGEST_B = "b" * 64
ED25519_PUB = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPWbR1SvWheKc88jLBdHjBh+Q1Jwls1oMsS3jGxugn0l op@laptop"
)
TARGET = Target(python="3.11", platforms=("manylinux2014_x86_64",), platform="manylinux2014_x86_64")


# --- paths, manifest, SHA256SUMS ---------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["wheels/x-1-py3-none-any.whl", "seed/node01/user-data", "apt/a_1.0+b~1_all.deb"]
)
def test_plain_relative_paths_are_accepted(path: str) -> None:
    assert check_relpath(path) is None


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../up", "a/../b", "a//b", "./a", "a/b\nc", "sp ace", "back\\slash"]
)
def test_paths_that_could_escape_or_confuse_sha256sum_are_refused(path: str) -> None:
    assert check_relpath(path) is not None


def test_manifest_round_trips_and_is_sorted() -> None:
    files = [FileEntry("wheels/b.whl", DIGEST_B, 2), FileEntry("apt/Packages", DIGEST_A, 1)]
    manifest = build_manifest(
        files,
        target=TARGET,
        agentctl_version="0.1.0",
        created_at="2026-01-02T03:04:05Z",
        contents={"seeds": ["n1"]},
    )
    text = manifest_to_json(manifest)
    doc = json.loads(text)
    assert doc["schema_version"] == SCHEMA_VERSION == "agentctl.bundle/1"
    assert doc["target"] == {
        "python": "3.11",
        "implementation": "cp",
        "abi": "cp311",
        "platform": "manylinux2014_x86_64",
        "platforms": ["manylinux2014_x86_64"],
    }
    assert [f["path"] for f in doc["files"]] == ["apt/Packages", "wheels/b.whl"]
    assert parse_manifest(text) == manifest


def test_manifest_refuses_duplicates_and_unsafe_paths() -> None:
    with pytest.raises(ManifestError, match="listed twice"):
        build_manifest(
            [FileEntry("a", DIGEST_A, 1), FileEntry("a", DIGEST_B, 1)],
            target=TARGET,
            agentctl_version="0",
            created_at="now",
        )
    with pytest.raises(ManifestError, match="component"):
        build_manifest(
            [FileEntry("../a", DIGEST_A, 1)], target=TARGET, agentctl_version="0", created_at="t"
        )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema_version="agentctl.bundle/2"), "schema_version"),
        (lambda d: d["files"][0].update(sha256="XYZ"), "sha256"),
        (lambda d: d["files"][0].update(path="/abs"), "bad path"),
        (lambda d: d["files"][0].update(size=-1), "size"),
        (lambda d: d["files"].append(dict(d["files"][0])), "twice"),
        (lambda d: d.pop("target"), "target"),
    ],
)
def test_parse_manifest_names_what_is_wrong(mutate, message: str) -> None:
    manifest = build_manifest(
        [FileEntry("a", DIGEST_A, 1)], target=TARGET, agentctl_version="0", created_at="t"
    )
    doc = json.loads(manifest_to_json(manifest))
    mutate(doc)
    with pytest.raises(ManifestError, match=message):
        parse_manifest(json.dumps(doc))


def test_sums_text_is_what_sha256sum_writes_and_parses_back() -> None:
    text = render_sums({"wheels/b.whl": DIGEST_B, "manifest.json": DIGEST_A})
    assert text == f"{DIGEST_A}  manifest.json\n{DIGEST_B}  wheels/b.whl\n"
    assert parse_sums(text) == {"manifest.json": DIGEST_A, "wheels/b.whl": DIGEST_B}
    assert parse_sums(f"{DIGEST_A} *binary-mode\n") == {"binary-mode": DIGEST_A}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense\n", "line 1"),
        (f"{DIGEST_A}  a\n{DIGEST_A[:-1]}  b\n", "line 2"),
        (f"{DIGEST_A}  ../etc/passwd\n", "line 1"),
        (f"{DIGEST_A}  a\n{DIGEST_B}  a\n", "twice"),
    ],
)
def test_parse_sums_names_the_bad_line(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_sums(text)


# --- wheels and the lock -------------------------------------------------------------------


def test_wheel_filenames_give_normalized_project_and_version() -> None:
    w = parse_wheel_filename("prometheus_client-0.21.1-py3-none-any.whl")
    assert (w.project, w.version) == ("prometheus-client", "0.21.1")
    w = parse_wheel_filename("PyYAML-6.0.2-1-cp311-cp311-manylinux_2_17_x86_64.whl")
    assert (w.project, w.version) == ("pyyaml", "6.0.2")
    with pytest.raises(LockError):
        parse_wheel_filename("not-a-wheel.tar.gz")


def test_lock_pins_every_project_with_all_its_wheel_hashes() -> None:
    lock = render_lock(
        {
            "msgpack-1.1.0-cp311-cp311-manylinux_2_17_x86_64.whl": DIGEST_B,
            "msgpack-1.1.0-cp311-cp311-musllinux_1_2_x86_64.whl": DIGEST_A,
            "idna-3.10-py3-none-any.whl": DIGEST_A,
        }
    )
    lines = [line for line in lock.splitlines() if not line.startswith("#")]
    assert lines == [
        f"idna==3.10 --hash=sha256:{DIGEST_A}",
        f"msgpack==1.1.0 --hash=sha256:{DIGEST_A} --hash=sha256:{DIGEST_B}",
    ]
    assert parse_lock(lock)["msgpack"] == ("1.1.0", (DIGEST_A, DIGEST_B))


def test_lock_refuses_two_versions_of_one_project() -> None:
    with pytest.raises(LockError, match="two versions"):
        render_lock({"idna-3.10-py3-none-any.whl": DIGEST_A, "idna-3.9-py3-none-any.whl": DIGEST_B})


def test_serving_requirements_keep_agentctls_bounds_and_skip_extras() -> None:
    requires = [
        "typer<1,>=0.29",
        "fastapi>=0.110",
        "PyYAML>=6",
        "pytest>=8; extra == 'dev'",
        "msgpack>=1.0",
        "pydantic>=2.6",
    ]
    reqs = serving_requirements(requires)
    assert "fastapi>=0.110" in reqs and "PyYAML>=6" in reqs and "msgpack>=1.0" in reqs
    assert "uvicorn" in reqs and "pyzmq" in reqs  # not in the metadata: bare names
    assert not any(r.startswith(("typer", "pytest")) for r in reqs)
    assert len(reqs) == 8


def test_pip_args_carry_target_flags_only_for_a_foreign_target() -> None:
    native = Target(python="3.11", platform="linux_x86_64")
    assert is_native(native, "3.11", "cp")
    args = pip_download_args(native, native=True, requirements=["idna"], dest="/w")
    assert "--platform" not in args and "--python-version" not in args
    assert args[:2] == ["download", "--only-binary=:all:"] and args[-1] == "idna"

    foreign = Target(
        python="3.12", platforms=("manylinux2014_x86_64", "manylinux_2_28_x86_64"), platform="x"
    )
    assert not is_native(foreign, "3.11", "cp")
    args = pip_download_args(foreign, native=False, requirements=["idna"], dest="/w")
    joined = " ".join(args)
    assert "--python-version 3.12" in joined and "--abi cp312" in joined
    assert "--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64" in joined


# --- apt -------------------------------------------------------------------------------------

CONTROL = """Package: tool
Version: 1:2.0-1
Architecture: amd64
Maintainer: Ops <ops@example.com>
Description: short
 long line one
 .
 long line two
Homepage: https://example.com
"""


def test_packages_stanza_has_scanpackages_fields_and_description_last() -> None:
    control = parse_control(CONTROL)
    assert deb_filename(control) == "tool_2.0-1_amd64.deb"
    sums = DebChecksums(size=10, md5="m" * 32, sha1="s" * 40, sha256=DIGEST_A)
    stanza = package_stanza(control, deb_filename(control), sums)
    keys = [line.split(":", 1)[0] for line in stanza.splitlines() if not line.startswith(" ")]
    assert keys == [
        "Package",
        "Version",
        "Architecture",
        "Maintainer",
        "Homepage",
        "Filename",
        "Size",
        "MD5sum",
        "SHA1",
        "SHA256",
        "Description",
    ]
    (parsed,) = parse_packages(stanza)
    assert parsed["Filename"] == "./tool_2.0-1_amd64.deb"
    assert parsed["SHA256"] == DIGEST_A and parsed["Size"] == "10"
    assert parsed["Description"] == "short\n long line one\n .\n long line two"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Version: 1\nArchitecture: all\n", "Package"),
        ("Package: ../evil\nVersion: 1\nArchitecture: all\n", "package name"),
        (" leading continuation\n", "continuation"),
        ("", "empty"),
    ],
)
def test_bad_control_data_is_refused(text: str, message: str) -> None:
    with pytest.raises(ControlError, match=message):
        parse_control(text)


def test_release_lists_indexes_by_md5_and_sha256() -> None:
    sums = DebChecksums(size=7, md5="m" * 32, sha1="s" * 40, sha256=DIGEST_B)
    text = render_release(
        {"Packages": sums, "Packages.gz": sums},
        date="Mon, 02 Jan 2026 03:04:05 +0000",
        architectures=["amd64", "all", "amd64"],
    )
    assert "Architectures: all amd64\n" in text
    assert f"SHA256:\n {DIGEST_B} 7 Packages\n {DIGEST_B} 7 Packages.gz\n" in text
    assert f"MD5Sum:\n {'m' * 32} 7 Packages\n" in text


# --- seeds -----------------------------------------------------------------------------------


def _seed(**overrides: object) -> SeedHost:
    values: dict[str, object] = {
        "name": "node01",
        "hostname": "node01",
        "fqdn": None,
        "user": "ops",
        "ssh_keys": (ED25519_PUB,),
        "bundle_dir": "/opt/agentctl/bundle",
    }
    values.update(overrides)
    return SeedHost(**values)  # type: ignore[arg-type]


def test_user_data_is_cloud_config_with_host_user_and_key() -> None:
    out = render_seed(_seed(), apt=False)
    assert out["user-data"].startswith("#cloud-config\n")
    doc = yaml.safe_load(out["user-data"])
    assert doc["hostname"] == "node01" and "fqdn" not in doc
    assert doc["ssh_pwauth"] is False and doc["disable_root"] is True
    (user,) = doc["users"]
    assert user["name"] == "ops" and user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == [ED25519_PUB]
    assert "write_files" not in doc and "runcmd" not in doc
    meta = yaml.safe_load(out["meta-data"])
    assert meta == {"instance-id": "iid-agentctl-node01", "local-hostname": "node01"}


def test_user_data_with_apt_installs_the_enabling_script_and_pins_the_key() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"
    doc = yaml.safe_load(render_seed(_seed(), apt=True, pubkey_pem=pem)["user-data"])
    files = {f["path"]: f for f in doc["write_files"]}
    assert files["/etc/agentctl/agentctl-bundle.list"]["content"] == (
        "deb [trusted=yes] file:/opt/agentctl/bundle/apt ./\n"
    )
    assert files["/etc/agentctl/bundle.pub"]["content"] == pem
    assert files["/usr/local/sbin/agentctl-bundle-apt"]["content"].startswith("#!/bin/sh\n")
    assert doc["runcmd"] == [
        [
            "/usr/local/sbin/agentctl-bundle-apt",
            "/opt/agentctl/bundle",
            "/etc/agentctl/agentctl-bundle.list",
            "/etc/apt/sources.list.d/agentctl-bundle.list",
            "/etc/agentctl/bundle.pub",
        ]
    ]


HOSTILE = [
    "x\nruncmd: [[reboot]]",
    'a" : b',
    "{evil: 1}",
    "- item",
    "*alias",
    "&anchor x",
    "!!python/object:os.system x",
    "#comment",
    "tab\there",
    "line\r\nbreak",
    "unicode \u2028 sep \u0085 nel é",
    "'single' \"double\" `back`",
    "",
    "null",
    "yes",
    "0o777",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_yaml_inline_is_one_line_and_round_trips(value: str) -> None:
    text = yaml_inline(value)
    assert "\n" not in text
    assert yaml.safe_load(f"k: {text}\n") == {"k": value}
    assert yaml.safe_load(f"k: {yaml_inline([value, {value: value}])}\n") == {
        "k": [value, {value: value}]
    }


def test_hostile_values_cannot_add_keys_to_user_data() -> None:
    for value in HOSTILE:
        seed = _seed(
            hostname=value, fqdn=value, user=value, ssh_keys=(value,), bundle_dir=value, name=value
        )
        out = render_seed(seed, apt=True, pubkey_pem=value)
        doc = yaml.safe_load(out["user-data"])
        expected_keys = {"hostname", "preserve_hostname", "manage_etc_hosts", "ssh_pwauth"}
        expected_keys |= {"disable_root", "users", "write_files", "runcmd"}
        if value:
            expected_keys.add("fqdn")
        assert set(doc) == expected_keys, value
        assert doc["hostname"] == value and doc["users"][0]["name"] == value
        assert doc["runcmd"][0][1] == value
        meta = yaml.safe_load(out["meta-data"])
        assert meta == {"instance-id": f"iid-agentctl-{value}", "local-hostname": value}


def test_seed_from_inventory_validates_names_and_leaks_no_secret() -> None:
    inv = load_inventory(FIXTURES / "connection.yml")
    seed = seed_host(inv.hosts["r1"], [ED25519_PUB], default_user="agentctl")
    assert (seed.user, seed.bundle_dir) == ("ops", "/srv/agentctl/bundle")
    out = render_seed(seed, apt=True)
    for text in out.values():
        assert "hunter2-secret" not in text
    w2 = inv.hosts["w2"]
    rendered = "".join(
        render_seed(seed_host(w2, [ED25519_PUB], default_user="x"), apt=False).values()
    )
    assert "tok-123" not in rendered and "nested-secret" not in rendered

    hostile = load_inventory(FIXTURES / "hostile.yml")
    with pytest.raises(InventoryError, match="ansible_user") as err:
        seed_host(hostile.hosts["evil1"], [ED25519_PUB], default_user="ops")
    assert "hostile.yml" in str(err.value)


def test_seed_refuses_hostnames_cloud_init_cannot_set() -> None:
    for name in ("under_score", "-lead", "a..b", "x" * 64):
        with pytest.raises(InventoryError, match="hostname"):
            seed_host(
                Host(name=name, address="10.0.0.1", user="ops"), [ED25519_PUB], default_user="o"
            )
    fq = seed_host(
        Host(name="gpu1.dc.example", address="h", user="ops"), [ED25519_PUB], default_user="o"
    )
    assert (fq.hostname, fq.fqdn) == ("gpu1", "gpu1.dc.example")
    with pytest.raises(InventoryError, match="root"):
        seed_host(Host(name="n", address="h", user="root"), [ED25519_PUB], default_user="o")


def test_authorized_keys_accept_public_lines_only() -> None:
    assert parse_authorized_keys(f"# mine\n{ED25519_PUB}\n\n") == (ED25519_PUB,)
    with pytest.raises(UsageError, match="private key"):
        parse_authorized_keys("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n")
    with pytest.raises(UsageError, match="line 1"):
        parse_authorized_keys("ssh-ed25519 not-base64!\n")
    with pytest.raises(UsageError, match="line 1"):  # blob of another key type
        parse_authorized_keys(ED25519_PUB.replace("ssh-ed25519", "ssh-rsa", 1))
    with pytest.raises(UsageError, match="no public key"):
        parse_authorized_keys("\n# nothing\n")


def test_a_template_that_splices_text_is_caught_at_build_time() -> None:
    """The round-trip guard: a future template edit that drops yaml_inline cannot ship."""
    careless = {
        "user-data": "#cloud-config\nhostname: {{ hostname }}\nusers:\n"
        "  - name: {{ user | yaml_inline }}\n"
        "    ssh_authorized_keys: {{ ssh_keys | yaml_inline }}\n",
        "meta-data": "local-hostname: {{ hostname | yaml_inline }}\n",
    }
    assert "hostname: node01\n" in render_seed(_seed(), apt=False, templates=careless)["user-data"]
    with pytest.raises(ValueError, match="round-trip"):
        render_seed(_seed(hostname="x\nssh_pwauth: true"), apt=False, templates=careless)


def test_target_defaults_to_this_interpreter_and_checks_the_version() -> None:
    import sys

    from agentctl.ctl.bundle.target import make_target, native_platform

    here = make_target()
    assert here.python == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert here.platform == native_platform() and here.platforms == ()
    assert is_native(here, here.python, "cp")
    there = make_target("3.12", ["manylinux2014_aarch64"])
    assert there.platform == "manylinux2014_aarch64" and there.effective_abi == "cp312"
    for bad in ("3", "3.11.2", "three.eleven"):
        with pytest.raises(UsageError, match=r"MAJOR\.MINOR"):
            make_target(bad)
