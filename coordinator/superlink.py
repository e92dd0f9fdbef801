"""``coordinator serve``: the coordinator's Flower SuperLink, with TLS and SuperNode authentication.

One process, one HTTPS port serving Flower's Fleet API (the sites' SuperNodes), Control API (``flwr``
CLI: runs, node registration) and Runtime API (our ServerApp). The Control API has no authentication
in Flower OSS: put the port behind the proxy in ``deploy/`` that admits ``/v1/control/*`` only from
the operator, or on a VPN.

State lives in ``<state-dir>``: ``state.db`` (runs and messages survive a restart), ``flwr-home/``
(Flower's app installs) and ``superlink.log``. Runtime dependency installation is off: the
coordinator's environment already holds this package.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from coordinator.tls import check_tls
from shared.flower_env import flower_env, flower_executable

SUPERLINK = "flower-superlink"


class SuperLinkSettings(BaseModel):
    """Where the SuperLink listens and keeps its state; TLS material comes from the coordinator's key directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys_dir: Path
    state_dir: Path
    host: str = "127.0.0.1"  # loopback unless told: the port also serves Flower's unauthenticated Control API
    port: int = Field(9092, ge=1, le=65535)
    threads: int | None = Field(None, ge=1)

    def flwr_home(self) -> Path:
        return self.state_dir.expanduser().resolve() / "flwr-home"


def superlink_command(settings: SuperLinkSettings) -> list[str]:
    """The ``flower-superlink`` command line (TLS and node auth always on).

    Raises:
        KeyFileError: the TLS certificate is missing or its key does not match.
    """
    tls = check_tls(settings.keys_dir.expanduser())
    state = settings.state_dir.expanduser().resolve()
    command = [flower_executable(SUPERLINK)]
    if tls.ca_cert.exists():
        command += ["--ssl-ca-certfile", str(tls.ca_cert.resolve())]
    return command + [
        "--ssl-certfile", str(tls.server_cert.resolve()),
        "--ssl-keyfile", str(tls.server_key.resolve()),
        "--enable-supernode-auth",
        "--host", settings.host,
        "--port", str(settings.port),
        "--disable-runtime-dependency-installation",
        "--database", str(state / "state.db"),
        "--log-file", str(state / "superlink.log"),
    ]


def superlink_env(settings: SuperLinkSettings) -> dict[str, str]:
    return flower_env(settings.flwr_home(), threads=settings.threads)


def exposure_note(settings: SuperLinkSettings) -> str:
    """What the chosen address exposes, said at start: the Control API shares the port with the sites' Fleet API."""
    where = f"{settings.host}:{settings.port}"
    if ipaddress.ip_address(_resolved(settings.host)).is_loopback:
        return (f"SuperLink on {where}, loopback only: sites on other machines reach it through a reverse proxy "
                "(deploy/proxy/nginx.conf), or pass --host to listen elsewhere")
    return (f"warning: SuperLink on {where}: its Control API (start runs, register nodes) has no authentication in "
            "Flower OSS and is reachable by anyone who reaches this port; admit /v1/control/* only from the "
            "operator (deploy/proxy/nginx.conf) or a VPN")


def _resolved(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "127.0.0.1" if host == "localhost" else "0.0.0.0"  # a name: treat it as reachable from outside


def serve(settings: SuperLinkSettings) -> None:
    """Replace this process with the SuperLink (signals and exit code are the SuperLink's own).

    Raises:
        KeyFileError: TLS material missing or mismatched.
        ConfigError: ``flower-superlink`` is not installed.
    """
    command = superlink_command(settings)
    settings.flwr_home().mkdir(parents=True, exist_ok=True, mode=0o700)
    os.execvpe(command[0], command, superlink_env(settings))
