"""The simulation harness's commands, added to ``coordinator`` where the harness is installed.

``coordinator simulate`` and ``coordinator study`` keep their names (the README's first command is
``coordinator simulate``), but they live here: they play every party on one machine, so they import both
sides, which ``coordinator/`` itself never does. ``coordinator/cli.py`` adds them through the
``feddistill.coordinator`` entry point group (pyproject.toml); an install without the harness (a coordinator
image) simply has no such commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from coordinator.run_options import (
    AlphaOption,
    ConfigFileOption,
    DataRootOption,
    DatasetOption,
    DeltaOption,
    EpsilonOption,
    IpcOption,
    IterationsOption,
    MethodOption,
    MinSitesOption,
    PartitionOption,
    SettingOption,
    fmt,
    keys_epilog,
    merged_run_values,
    pooled_line,
    run_option,
)
from harness.study.plan import StudyConfig
from shared.config import RunConfig
from shared.errors import ConfigError
from shared.fields import setting_error
from shared.methods import DistillMethod, InitMode
from shared.schemas import ImbalanceCorrection

_DEFAULTS = RunConfig()
_STUDY = StudyConfig()

# Options of this machine's reads, not run-config keys: the run config travels to the sites, which decide
# their own data and checks (and never download).
DownloadOption = Annotated[bool, typer.Option(
    "--download", help="First fetch the dataset's official MedMNIST file into --data-root (default: $MEDMNIST_ROOT, "
    "else ~/.medmnist) with medmnist's own downloader, which checks its MD5. Simulations only: a site never downloads.")]
Md5Option = Annotated[bool, typer.Option(
    "--verify-md5/--no-verify-md5", help="Check an official MedMNIST file's MD5 before sharing it out (a file named "
    "<dataset>.npz that is a local export fails it).")]
# simulate's parameters (and imports) that are not run-config keys
_NOT_RUN_CONFIG = ("ctx", "verbose", "run_simulation", "md5_checks", "setting", "config_file", "download", "verify_md5")


def register(app: typer.Typer) -> None:
    """Add the harness's commands to the ``coordinator`` app."""
    app.command(epilog=keys_epilog())(simulate)
    app.command()(study)
    app.command("study-correlation")(study_correlation)
    app.command()(split)


def split(
    out: Annotated[Path, typer.Option(help="Folder for the exports: <out>/site-0.npz, site-1.npz, ...")],
    dataset: DatasetOption = _DEFAULTS.dataset,
    data_root: DataRootOption = "",
    sites: Annotated[int, typer.Option(help="Number of shares.")] = 2,
    partition: PartitionOption = _DEFAULTS.partition,
    alpha: AlphaOption = _DEFAULTS.alpha,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = _DEFAULTS.seed,
) -> None:
    """Split a dataset into hospital-style .npz exports, one per site, as a simulation splits it (demos, tests)."""
    from harness.sites import split_shares, write_export

    for share in split_shares(dataset, data_root, sites, partition, alpha, seed):
        path = write_export(share.images, out / f"{share.site_id}.npz")
        typer.echo(f"{path}: {len(share.images.train)} training and {len(share.images.test)} test images "
                   f"(share {share.sha256[:16]})")


def simulate(
    ctx: typer.Context,
    dataset: DatasetOption = _DEFAULTS.dataset,
    sites: Annotated[int, run_option("sites")] = _DEFAULTS.sites,
    partition: PartitionOption = _DEFAULTS.partition,
    alpha: AlphaOption = _DEFAULTS.alpha,
    method: MethodOption = _DEFAULTS.method,
    ipc: IpcOption = _DEFAULTS.ipc,
    iterations: IterationsOption = _DEFAULTS.iterations,
    epsilon: EpsilonOption = _DEFAULTS.epsilon,
    delta: DeltaOption = _DEFAULTS.delta,
    data_root: DataRootOption = "",
    min_sites: MinSitesOption = _DEFAULTS.min_sites,
    seed: Annotated[int, run_option("seed")] = _DEFAULTS.seed,
    rounds: Annotated[int, run_option("rounds")] = _DEFAULTS.rounds,
    device: Annotated[str, run_option("device")] = _DEFAULTS.device,
    out_dir: Annotated[Path, run_option("out-dir")] = Path(_DEFAULTS.out_dir),
    init: Annotated[InitMode, run_option("init")] = _DEFAULTS.init,
    batch_real: Annotated[int, run_option("batch-real")] = _DEFAULTS.batch_real,
    outer_loop: Annotated[int, run_option("outer-loop")] = _DEFAULTS.outer_loop,
    inner_loop: Annotated[int, run_option("inner-loop")] = _DEFAULTS.inner_loop,
    net_width: Annotated[int, run_option("net-width")] = _DEFAULTS.net_width,
    dsa: Annotated[bool, run_option("dsa")] = _DEFAULTS.dsa,
    train_epochs: Annotated[int, run_option("train-epochs")] = _DEFAULTS.train_epochs,
    imbalance: Annotated[ImbalanceCorrection, run_option("imbalance")] = _DEFAULTS.imbalance,
    config_file: ConfigFileOption = None,
    setting: SettingOption = None,
    download: DownloadOption = False,
    verify_md5: Md5Option = True,
    verbose: Annotated[bool, typer.Option(help="Flower's debug logging.")] = False,
) -> None:
    """Run a multi-site federation on this machine with Flower's Simulation Engine and write a results folder."""
    from harness.simulate import simulate as run_simulation
    from harness.source import md5_checks

    options = {k: v for k, v in locals().items() if k not in _NOT_RUN_CONFIG}
    config = RunConfig.from_flower(merged_run_values(ctx, options, config_file, setting), help_command=ctx.command_path)
    if download:
        fetch(config.dataset, config.data_root)
    with md5_checks(verify_md5):
        run_dir, summary = run_simulation(config, verbose=verbose)
    typer.echo(f"{summary.sites_accepted}/{summary.sites_expected} sites accepted; {pooled_line(summary)}")
    if summary.yardstick is not None:
        y, corrected = summary.yardstick.corrected, summary.uncorrected is not None
        typer.echo(f"a random real subset of the same size (not private), trained the same way: balanced accuracy "
                   f"{fmt(y.balanced_accuracy)}, AUC {fmt(y.auc)}"
                   + (" (corrected as the global model was; report.md has both uncorrected too)" if corrected else ""))
    typer.echo(f"results: {run_dir}")


def study(
    dataset: DatasetOption = _STUDY.dataset,
    data_root: DataRootOption = "",
    sites: Annotated[int, typer.Option(help="Number of simulated sites.")] = _STUDY.sites,
    partition: PartitionOption = _STUDY.partition,
    alpha: AlphaOption = _STUDY.alpha,
    seeds: Annotated[list[int] | None, typer.Option("--seed", help="A seed of the study; repeat for more (default 0, 1, 2).")] = None,
    methods: Annotated[list[DistillMethod] | None, typer.Option("--method", help="A pooled arm's method; repeat (default dc, dm, mtt, idm).")] = None,
    ipcs: Annotated[list[int] | None, typer.Option("--ipc", help="A pooled arm's images per class; repeat (default 1, 10, 50).")] = None,
    rounds: Annotated[int, typer.Option(help="Refinement rounds of each pooled arm; rounds 1 and R are both reported.")] = _STUDY.rounds,
    iterations: IterationsOption = _STUDY.iterations,
    epsilon: EpsilonOption = _STUDY.epsilon,
    train_epochs: Annotated[int, typer.Option(help="Epochs of the global model on a pooled set or subset.")] = _STUDY.train_epochs,
    fedavg_local_epochs: Annotated[int, typer.Option(help="FedAvg: local epochs per round.")] = _STUDY.fedavg_local_epochs,
    fedavg_max_rounds: Annotated[int, typer.Option(help="FedAvg: most rounds; it stops earlier at a plateau.")] = _STUDY.fedavg_max_rounds,
    fedavg_patience: Annotated[int, typer.Option(help="FedAvg: rounds without a 0.005 balanced-accuracy gain that make a plateau.")] = _STUDY.fedavg_patience,
    local_epochs: Annotated[int, typer.Option(help="Local only: epochs of each site's own model.")] = _STUDY.local_epochs,
    central_epochs: Annotated[int, typer.Option(help="Centralised: epochs on every training image.")] = _STUDY.central_epochs,
    cross_arch_epochs: Annotated[int, typer.Option(help="Epochs of the ResNet-18 trained on each pooled set and subset (0: skip).")] = _STUDY.cross_arch_epochs,
    net_width: Annotated[int, typer.Option(help="ConvNet width of every arm.")] = _STUDY.net_width,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda, ...")] = _STUDY.device,
    out_dir: Annotated[Path, typer.Option(help="Parent folder of the study's folder (study-<dataset>); rerun to resume.")] = Path(_STUDY.out_dir),
    docs: Annotated[Path, typer.Option(help="Where study-<dataset>.md, its plots and its JSON are written.")] = Path("docs"),
    download: DownloadOption = False,
) -> None:
    """Compare pooled distilled sets with FedAvg, local-only, a random real subset and centralised training.

    Same partition and seeds for every arm (checked by digest); pooled metrics; bytes per site; a report with plots.
    Rerunning the same command resumes: finished arms are skipped.
    """
    from harness.study.report import write_report
    from harness.study.runner import run_study

    values = {k: v for k, v in dict(locals()).items() if k not in ("write_report", "run_study", "docs", "download")}
    for name in ("seeds", "methods", "ipcs"):
        if values[name] is None:
            values.pop(name)
    values["out_dir"] = str(out_dir)
    try:
        config = StudyConfig(**values)
    except ValidationError as exc:
        raise setting_error(exc, "option --{key}: {msg}") from None
    if download:
        fetch(config.dataset, config.data_root)
    folder, records = run_study(config)
    report = write_report(config, records, docs)
    typer.echo(f"{len(records)} arm records in {folder / 'study.json'}; report: {report}")


def fetch(dataset: str, data_root: str) -> None:
    """``--download``: the official file into the data root, and where it went."""
    from harness.source import download_medmnist

    typer.echo(f"{dataset}: the official MedMNIST file, MD5 checked, is at {download_medmnist(dataset, data_root)}")


def study_correlation(
    studies: Annotated[list[Path], typer.Argument(help="study-<dataset>.json files written by `coordinator study`.")],
    docs: Annotated[Path, typer.Option(help="Where study-correlation.md and its plot are written.")] = Path("docs"),
) -> None:
    """Pearson correlation of random-subset and distilled accuracy across studies (Li et al., 2024)."""
    from harness.study.report import correlate

    missing = [str(p) for p in studies if not p.is_file()]
    if missing:
        raise ConfigError(f"no study JSON at {', '.join(missing)}")
    typer.echo(f"report: {correlate(studies, docs)}")
