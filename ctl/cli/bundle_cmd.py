"""`agentctl bundle build|verify|keygen`: air-gapped install bundles for GPU nodes."""

from __future__ import annotations

import contextlib
import getpass
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import BuildProgress, esc, plain
from agentctl.ctl.cli.state import State
from agentctl.ctl.errors import UsageError

if TYPE_CHECKING:  # the bundle builder (cryptography, Jinja2) loads when a command runs
    from agentctl.ctl.bundle.seed import SeedHost

app = typer.Typer(
    help="Air-gapped bundles: wheels, playbooks, apt packages and cloud-init seeds, signed.",
    no_args_is_help=True,
)


def _seeds(st: State, inventory: str | None, ssh_pubkey: Path | None) -> list[SeedHost]:
    """Seeds for the selected hosts when an inventory is named (-i) or a key is given."""
    from agentctl.ctl.bundle import parse_authorized_keys, seed_host

    if inventory is not None:
        st.inventory_path = inventory
    if ssh_pubkey is None:
        if st.inventory_path is not None:
            raise UsageError(
                "cloud-init seeds need the operator's public key",
                hint="pass --ssh-pubkey ~/.ssh/id_ed25519.pub (or leave out -i for no seeds)",
            )
        return []
    try:
        keys = parse_authorized_keys(ssh_pubkey.read_text(), source=str(ssh_pubkey))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --ssh-pubkey {ssh_pubkey}: {exc}") from None
    return [seed_host(h, keys, default_user=default_user()) for h in st.select()]


def default_user() -> str:
    """The seed's user when a host has no ansible_user: who ssh would log in as (this user),
    unless that is root or unusable, then `agentctl`."""
    from agentctl.ctl.bundle.seed import usable_user

    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no passwd entry (containers)
        return "agentctl"
    return name if usable_user(name) else "agentctl"


def _passphrase(env_name: str | None) -> bytes | None:
    if env_name is None:
        return None
    value = os.environ.get(env_name)
    if value is None:
        raise UsageError(f"--sign-key-passphrase-env: variable {env_name} is not set")
    return value.encode()


@app.command("build")
def build(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Bundle directory to create (DIR.tar with --tar).")
    ],
    inventory: Annotated[
        str | None,
        typer.Option("--inventory", "-i", help="Inventory for cloud-init seeds (one per host)."),
    ] = None,
    python: Annotated[
        str | None, typer.Option("--python", help="Target Python MAJOR.MINOR (default: this one).")
    ] = None,
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform", help="Target platform tag, e.g. manylinux2014_x86_64 (repeatable)."
        ),
    ] = None,
    implementation: Annotated[
        str, typer.Option("--implementation", help="Target implementation tag.")
    ] = "cp",
    abi: Annotated[str | None, typer.Option("--abi", help="Target ABI (default cpXY).")] = None,
    wheelhouse: Annotated[
        Path | None,
        typer.Option(
            "--wheelhouse",
            help="Use these wheels instead of downloading.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    agentctl_wheel: Annotated[
        Path | None,
        typer.Option(
            "--agentctl-wheel",
            help="agentctl's wheel (default: built).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    requirements: Annotated[
        Path | None,
        typer.Option(
            "--requirements",
            "-r",
            help="Extra requirements to bundle.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    debs: Annotated[
        Path | None,
        typer.Option(
            "--debs",
            help="Directory of .deb files for the apt repository.",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    ssh_pubkey: Annotated[
        Path | None,
        typer.Option("--ssh-pubkey", help="Operator's OpenSSH public key(s) for the seeds."),
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option("--sign-key", help="Ed25519 private key (PEM or OpenSSH) to sign with."),
    ] = None,
    sign_key_passphrase_env: Annotated[
        str | None,
        typer.Option("--sign-key-passphrase-env", help="Variable holding the key's passphrase."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle.")] = False,
    tar: Annotated[bool, typer.Option("--tar", help="Also write DIR.tar.")] = False,
) -> None:
    """Build a bundle: wheelhouse + lock, playbooks, optional apt repo and seeds, SHA256SUMS."""
    from agentctl.ctl.bundle import BuildOptions, build_bundle, load_private_key, make_target

    st = state()
    key = load_private_key(sign_key, _passphrase(sign_key_passphrase_env)) if sign_key else None
    options = BuildOptions(
        out=out,
        target=make_target(python, platform, implementation, abi),
        wheelhouse=wheelhouse,
        agentctl_wheel=agentctl_wheel,
        requirements=requirements,
        debs=debs,
        seeds=_seeds(st, inventory, ssh_pubkey),
        sign_key=key,
        force=force,
        tar=tar,
    )
    with BuildProgress(st.output) as progress:
        result = build_bundle(options, progress)
    summary = result.summary()
    st.output.emit(summary, schema="agentctl.bundle.build/1")
    for warning in result.warnings:
        st.output.warn(warning)
    st.output.print(_summary_table(summary))


def _summary_table(summary: dict[str, Any]) -> Table:
    contents = summary["contents"]
    table = Table(title="Bundle", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    target = summary["target"]
    rows = [
        ("path", summary["path"]),
        ("archive", summary["archive"] or "-"),
        ("target", f"{target['implementation']}{target['python']} {target['platform']}"),
        ("files", f"{summary['file_count']} ({summary['total_size'] / 2**20:.1f} MiB)"),
        ("wheels", str(len(contents["wheels"]))),
        ("debs", str(len(contents["debs"]))),
        ("seeds", ", ".join(contents["seeds"]) or "-"),
        ("signed", summary["key_fingerprint"] or "no"),
    ]
    for name, value in rows:
        table.add_row(name, plain(value))
    return table


@app.command("verify")
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (or a .tar of one).")],
    pubkey: Annotated[
        Path | None,
        typer.Option("--pubkey", help="Ed25519 public key: the signature must verify with it."),
    ] = None,
) -> None:
    """Check signature, SHA256SUMS and manifest; exit 6 naming every bad file."""
    from agentctl.ctl.bundle import BundleVerificationError, extract_bundle, verify_bundle

    st = state()
    with contextlib.ExitStack() as stack:
        root = bundle
        if bundle.is_file():
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="agentctl-bundle-"))
            root = extract_bundle(bundle, Path(tmp) / "bundle")
        try:
            verified = verify_bundle(root, pubkey)
        except BundleVerificationError as exc:
            report = exc.report() | {"path": str(bundle)}
            st.output.emit(report, schema="agentctl.bundle.verify/1", ok=False, errors=[exc])
            if not st.output.json_mode:
                for problem in exc.problems:
                    st.output.err.print(f"[red]✗[/red] {esc(problem)}")
            raise
    report = verified.report() | {"path": str(bundle)}
    st.output.emit(report, schema="agentctl.bundle.verify/1")
    signature = verified.signature
    if verified.key_fingerprint:
        signature += f" ({verified.key_fingerprint})"
    st.output.print(
        plain(
            f"bundle {bundle} verified: {len(verified.checked)} files, signature {signature}, "
            f"agentctl {verified.manifest.agentctl_version}"
        )
    )


@app.command("keygen")
def keygen(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Writes OUT (private, 0600) and OUT.pub.")
    ],
) -> None:
    """Make an Ed25519 key pair for signing bundles (PEM, readable by OpenSSL)."""
    from agentctl.ctl.bundle import generate_keypair

    st = state()
    pair = generate_keypair(out)
    data = {
        "private_key": str(pair.private_key),
        "public_key": str(pair.public_key),
        "fingerprint": pair.fingerprint,
    }
    st.output.emit(data, schema="agentctl.bundle.keygen/1")
    st.output.print(plain(f"{pair.private_key} (private), {pair.public_key}: {pair.fingerprint}"))
