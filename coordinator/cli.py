"""``coordinator``: the command line of the coordinating team. Thin: it builds a RunConfig and calls the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from shared.config import RunConfig
from shared.errors import ConfigError
from shared.logs import run_cli
from shared.schemas import DistillMethod, InitMode, PartitionScheme

app = typer.Typer(help="Coordinate a federated dataset-distillation study.", pretty_exceptions_enable=False,
                  no_args_is_help=True, add_completion=False)

_DEFAULTS = RunConfig()


@app.callback()
def _group() -> None:
    """Keep sub-commands even while there is only one."""


@app.command()
def simulate(
    dataset: Annotated[str, typer.Option(help="MedMNIST 2D dataset flag, e.g. breastmnist, retinamnist, pathmnist.")] = _DEFAULTS.dataset,
    sites: Annotated[int, typer.Option(help="Number of simulated sites (Flower SuperNodes).")] = _DEFAULTS.sites,
    partition: Annotated[PartitionScheme, typer.Option(help="How the dataset is split across sites.")] = _DEFAULTS.partition,
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration: smaller = more different label mixes.")] = _DEFAULTS.alpha,
    method: Annotated[DistillMethod, typer.Option(help="Distillation method run at every site.")] = _DEFAULTS.method,
    ipc: Annotated[int, typer.Option(help="Synthetic images per class per site.")] = _DEFAULTS.ipc,
    iterations: Annotated[int, typer.Option(help="Distillation iterations.")] = _DEFAULTS.iterations,
    data_root: Annotated[str, typer.Option(help="Folder with MedMNIST .npz files (default: $MEDMNIST_ROOT).")] = "",
    min_sites: Annotated[int, typer.Option(help="Fewest valid bundles for the run to go on.")] = _DEFAULTS.min_sites,
    seed: Annotated[int, typer.Option(help="Seed for partitioning, distillation and training.")] = _DEFAULTS.seed,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, cuda:1, ...")] = _DEFAULTS.device,
    out_dir: Annotated[Path, typer.Option(help="Parent folder of the run's results folder.")] = Path(_DEFAULTS.out_dir),
    init: Annotated[InitMode, typer.Option(help="Synthetic init. 'real' copies patient images into the release: demos only.")] = _DEFAULTS.init,
    batch_real: Annotated[int, typer.Option(help="Real images per class per matching step.")] = _DEFAULTS.batch_real,
    outer_loop: Annotated[int, typer.Option(help="DC outer loop (0: the paper's value for the ipc).")] = _DEFAULTS.outer_loop,
    inner_loop: Annotated[int, typer.Option(help="DC inner loop (0: the paper's value for the ipc).")] = _DEFAULTS.inner_loop,
    net_width: Annotated[int, typer.Option(help="ConvNet width (the paper uses 128).")] = _DEFAULTS.net_width,
    dsa: Annotated[bool, typer.Option(help="Differentiable Siamese augmentation while distilling.")] = _DEFAULTS.dsa,
    train_epochs: Annotated[int, typer.Option(help="Epochs to train the global model on the pooled set.")] = _DEFAULTS.train_epochs,
    verbose: Annotated[bool, typer.Option(help="Flower's debug logging.")] = False,
) -> None:
    """Run a multi-site federation on this machine with Flower's Simulation Engine and write a results folder."""
    from coordinator.simulate import simulate as run_simulation

    values = dict(locals())
    values.pop("verbose")
    values.pop("run_simulation")
    values["out_dir"] = str(out_dir)
    try:
        config = RunConfig(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(f"option --{str(error['loc'][0]).replace('_', '-')}: {error['msg']}") from None
    if config.min_sites > config.sites:
        raise ConfigError(f"--min-sites {config.min_sites} is more than --sites {config.sites}")
    run_dir, summary = run_simulation(config, verbose=verbose)
    glob = summary.get("global", {})
    typer.echo(
        f"{summary['sites_accepted']}/{summary['sites_expected']} sites accepted; global accuracy "
        f"{_fmt(glob.get('accuracy'))}, AUC {_fmt(glob.get('auc'))}\nresults: {run_dir}"
    )


sites_app = typer.Typer(help="The trust store: which signing key speaks for which site.", no_args_is_help=True)
app.add_typer(sites_app, name="sites")


@app.command()
def init(keys_dir: Annotated[Path, typer.Option(help="Where the coordinator's keys live (created, 0700).")]) -> None:
    """Create the coordinator's HPKE key pair; prints the public key's fingerprint for sites to pin."""
    from shared import crypto
    from shared.keys import create_coordinator_key

    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    public = create_coordinator_key(keys_dir)
    typer.echo(f"coordinator key created in {keys_dir}\nfingerprint (sites pin it): {crypto.fingerprint(public)}")


@sites_app.command("add")
def sites_add(
    keys_dir: Annotated[Path, typer.Option(help="The coordinator's key directory.")],
    site_id: Annotated[str, typer.Option(help="The site's stable id, as in its node config.")],
    signing_key: Annotated[Path, typer.Option(help="The site's signing.pub, received out of band.")],
) -> None:
    """Register a site's signing key."""
    from coordinator.trust import register_site

    typer.echo(f"registered {site_id}: {register_site(keys_dir, site_id, signing_key)}")


@sites_app.command("list")
def sites_list(keys_dir: Annotated[Path, typer.Option(help="The coordinator's key directory.")]) -> None:
    """List registered sites and their key fingerprints."""
    from coordinator.trust import load_coordinator_keys
    from shared import crypto

    for site_id, key in load_coordinator_keys(keys_dir).sites.items():
        typer.echo(f"{site_id}\t{crypto.fingerprint(key)}")


@sites_app.command("revoke")
def sites_revoke(
    keys_dir: Annotated[Path, typer.Option(help="The coordinator's key directory.")],
    site_id: Annotated[str, typer.Option(help="The site to remove.")],
) -> None:
    """Remove a site's key: its bundles are rejected from then on."""
    from coordinator.trust import revoke_site

    revoke_site(keys_dir, site_id)
    typer.echo(f"revoked {site_id}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    """Entry point of the command."""
    run_cli(app)
