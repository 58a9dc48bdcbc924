"""The one exception tree of agentctl, and the exit code each failure domain maps to.

Only the CLI turns these into messages and exit codes. Library exceptions (paramiko,
SQLAlchemy, YAML) are translated where they are caught, so callers never see them.

    AgentctlError                 exit 1
    ├── UsageError                exit 2   bad flags, bad patterns
    ├── ConfigError               exit 2   settings file or environment invalid
    ├── InventoryError            exit 2   malformed inventory (file, line, field)
    ├── PlaybookError             exit 2   malformed playbook, template or condition
    ├── StoreError                exit 1   database unreachable or migration failed
    ├── RemoteError               exit 1   base for one host's troubles
    │   ├── UnreachableError      exit 4   connect refused, DNS, timeout before auth
    │   ├── HostKeyError          exit 5   unknown or changed host key
    │   ├── AuthError             exit 5   authentication refused
    │   ├── CommandTimeout        exit 3   a remote step outlived its deadline
    │   ├── SudoError             exit 3   sudo refused or needs a password we do not have
    │   ├── TransferError         exit 3   SFTP failure or checksum mismatch
    │   └── OperationError        exit 3   a playbook operation failed on a host
    ├── HostsFailed               exit 3   the fan-out finished, some hosts failed
    ├── VerificationError         exit 6   a checksum, schema or signature did not verify
    └── Interrupted               exit 130
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (README, `agentctl --help`)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    HOSTS_FAILED = 3
    UNREACHABLE = 4
    HOST_KEY_OR_AUTH = 5
    VERIFICATION = 6
    INTERRUPTED = 130


class AgentctlError(Exception):
    """Root of every error agentctl raises on purpose."""

    exit_code: ExitCode = ExitCode.ERROR
    #: short machine-readable kind, used in the JSON envelope's errors[]
    kind: str = "error"

    def __init__(self, message: str, *, host: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.host = host
        self.hint = hint

    def to_dict(self) -> dict[str, str]:
        out = {"kind": self.kind, "message": self.message}
        if self.host:
            out["host"] = self.host
        if self.hint:
            out["hint"] = self.hint
        return out

    def __str__(self) -> str:
        prefix = f"{self.host}: " if self.host else ""
        return prefix + self.message


class UsageError(AgentctlError):
    exit_code = ExitCode.USAGE
    kind = "usage"


class ConfigError(AgentctlError):
    exit_code = ExitCode.USAGE
    kind = "config"


class LocatedError(AgentctlError):
    """A malformed input file; the message names file, line and field."""

    exit_code = ExitCode.USAGE
    kind = "input"

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        where = ""
        if path:
            where = path
            if line is not None:
                where += f":{line}"
            where += ": "
        if field:
            where += f"{field}: "
        super().__init__(where + message)
        #: the message without its location
        self.detail = message
        self.path = path
        self.line = line
        self.field = field


class InventoryError(LocatedError):
    """A malformed inventory."""

    kind = "inventory"


class PlaybookError(LocatedError):
    """A malformed playbook, or a template or condition that cannot be evaluated for a host."""

    kind = "playbook"


class StoreError(AgentctlError):
    kind = "store"


class RemoteError(AgentctlError):
    kind = "remote"
    exit_code = ExitCode.HOSTS_FAILED


class UnreachableError(RemoteError):
    kind = "unreachable"
    exit_code = ExitCode.UNREACHABLE


class HostKeyError(RemoteError):
    """Unknown or changed host key. `changed` is the loud case: possible interception."""

    kind = "host_key"
    exit_code = ExitCode.HOST_KEY_OR_AUTH

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        hint: str | None = None,
        changed: bool = False,
        fingerprint: str | None = None,
    ) -> None:
        super().__init__(message, host=host, hint=hint)
        self.changed = changed
        self.fingerprint = fingerprint


class AuthError(RemoteError):
    kind = "auth"
    exit_code = ExitCode.HOST_KEY_OR_AUTH


class CommandTimeout(RemoteError):
    kind = "timeout"


class SudoError(RemoteError):
    kind = "sudo"


class TransferError(RemoteError):
    kind = "transfer"


class OperationError(RemoteError):
    """A playbook operation could not reach its desired state on a host."""

    kind = "operation"


class HostsFailed(AgentctlError):
    kind = "hosts_failed"
    exit_code = ExitCode.HOSTS_FAILED


class VerificationError(AgentctlError):
    kind = "verification"
    exit_code = ExitCode.VERIFICATION


class Interrupted(AgentctlError):
    kind = "interrupted"
    exit_code = ExitCode.INTERRUPTED
