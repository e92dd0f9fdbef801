"""The shipped deployment files: the compose topology, the proxy's Control API rule, the systemd units."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import yaml

from site_agent.cli import app as site_cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _flags(command: list[str]) -> dict[str, str]:
    return {flag: command[i + 1] for i, flag in enumerate(command[:-1]) if flag.startswith("--")}


def test_compose_has_a_superlink_a_proxy_and_three_sites_with_their_own_data() -> None:
    """SuperLink (TLS + node auth via coordinator serve), proxy in front, three sites each with its own volumes."""
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"superlink", "proxy", "site-a", "site-b", "site-c"}
    assert services["superlink"]["command"][0] == "serve" and "ports" not in services["superlink"]
    assert any(v.split(":")[1].split()[0] == "/keys" for v in services["superlink"]["volumes"])
    data_volumes = set()
    for name in ("site-a", "site-b", "site-c"):
        site = services[name]
        flags = _flags(site["command"])
        assert site["command"][0] == "join" and flags["--site-id"] == name
        assert flags["--superlink"] == "proxy:9443" and flags["--root-certificates"].startswith("/keys/")
        assert "--insecure" not in site["command"]
        volumes = {v.split(":")[1]: v.split(":")[0] for v in site["volumes"]}
        assert volumes["/keys"] == f"./sites/{name}" and volumes["/data"] == f"{name}-data"
        # budgets, audit log and held releases outlive the container: the cache is on the site's state volume
        assert volumes["/var/lib/feddistill"] == f"{name}-state" and flags["--cache-dir"].startswith("/var/lib/feddistill/")
        data_volumes.add(volumes["/data"])
        assert site["image"] == "feddistill-site" and site["build"]["dockerfile"] == "deploy/Dockerfile.site"
    assert len(data_volumes) == 3 and data_volumes <= set(compose["volumes"])


def test_compose_site_commands_are_valid_join_options() -> None:
    """Every option a compose site passes is an option `site-agent join` has."""
    join = next(c for c in site_cli.registered_commands if c.name == "join" or c.callback.__name__ == "join")
    known = {"--" + p.replace("_", "-") for p in join.callback.__code__.co_varnames[: join.callback.__code__.co_argcount]}
    for name in ("site-a", "site-b", "site-c"):
        assert set(_flags(_compose()["services"][name]["command"])) <= known


def test_proxy_admits_control_api_only_from_the_operator() -> None:
    """/v1/control/ has allow + deny all; the Fleet API is proxied; everything else (e.g. /v1/runtime/) is refused."""
    conf = (DEPLOY / "proxy" / "nginx.conf").read_text()
    control = re.search(r"location /v1/control/ \{(.*?)\}", conf, re.DOTALL).group(1)
    assert re.search(r"allow \S+;", control) and "deny all;" in control
    assert re.search(r"location /v1/fleet/ \{\s*proxy_pass https://superlink;", conf)
    assert re.search(r"location / \{\s*return 403;", conf) and "/v1/runtime/" not in re.sub(r"#.*", "", conf)


def test_systemd_units_run_our_commands_offline() -> None:
    """The bare-metal units start `site-agent join` / `coordinator serve` with Flower's offline settings."""
    for unit, command in (("feddistill-site.service", "site-agent join"),
                          ("feddistill-superlink.service", "coordinator serve")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string((DEPLOY / "systemd" / unit).read_text())
        service = parser["Service"]
        assert command in service["ExecStart"].replace("\\\n", " ")
        assert "FLWR_DISABLE_UPDATE_CHECK=1" in service["Environment"] and service["Restart"] == "on-failure"
