"""``site-agent check | distill | inspect | policy``: a hospital IT team's tools that need no coordinator.

Thin, like ``site_agent.cli`` (which registers these commands): each command calls the library and
shows its result as a table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from shared import crypto
from shared.config import RunConfig
from shared.errors import ConfigError
from shared.fields import setting_error
from shared.methods import DistillMethod
from shared.untrusted import untrusted_text
from site_agent.check import CheckReport, check_data
from site_agent.handlers import prepare_release
from site_agent.medmnist_files import dataset_of_file
from site_agent.policy import SitePolicy, describe, write_default_policy
from site_agent.preview import open_for_inspection, opened_grid, preview_request, summarize_bundle, write_release
from site_agent.privacy.gate import ReleaseBlocked
from site_agent.privacy.page import REPORT_HTML, privacy_report_folder, summary_lines
from site_agent.settings import SiteSettings, find_cache_dir

console = Console()
policy_app = typer.Typer(help="The site's own limits: show them, or write the default policy file.",
                         no_args_is_help=True)

DATA_HELP = "This site's images: a MedMNIST .npz (or its folder), a .npz export, or an image folder."
DataOption = Annotated[Path, typer.Option("--data", help=DATA_HELP)]
DatasetOption = Annotated[
    str | None, typer.Option(help="MedMNIST flag the data follows (classes, channels); an official file's name gives it.")
]
PolicyOption = Annotated[Path | None, typer.Option("--policy", help="Site policy JSON (default: the built-in policy).")]
Md5Option = Annotated[bool, typer.Option("--verify-md5/--no-verify-md5", help="Check an official file's MD5.")]


def register(app: typer.Typer) -> None:
    """Add these commands to the ``site-agent`` app."""
    app.command()(check)
    app.command()(distill)
    app.command()(inspect)
    app.add_typer(policy_app, name="policy")


def check(
    data: DataOption, dataset: DatasetOption = None, policy: PolicyOption = None, verify_md5: Md5Option = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Validate local data: images per class and split, and every reason it cannot be distilled."""
    site_policy = SitePolicy.from_file(policy) if policy else SitePolicy()
    report = check_data(data, dataset, site_policy, verify_md5)  # an error's local detail names the file
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _show_check(report)
    if not report.ok:
        raise typer.Exit(1)


_FEDERATION = RunConfig()  # a preview releases what a default federation run would


def distill(
    data: DataOption,
    out: Annotated[Path, typer.Option(help="Where to write the sealed bundle (e.g. bundle.fdsb).")],
    key_dir: Annotated[Path, typer.Option(help="Site key directory: signing.key and the pinned coordinator.pub.")],
    dataset: DatasetOption = None,
    method: Annotated[DistillMethod, typer.Option(help="Distillation method.")] = _FEDERATION.method,
    ipc: Annotated[int, typer.Option(help="Synthetic images per class.")] = _FEDERATION.ipc,
    iterations: Annotated[int, typer.Option(help="Distillation iterations (0: the method's CPU preset).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the distillation.")] = 0,
    epsilon: Annotated[float, typer.Option(help="dpdm: the release's differential-privacy epsilon.")] = _FEDERATION.epsilon,
    delta: Annotated[float, typer.Option(help="dpdm: the release's differential-privacy delta.")] = _FEDERATION.delta,
    site_id: Annotated[str, typer.Option(help="Site id written into the manifest.")] = "local",
    policy: PolicyOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    cache_dir: Annotated[Path | None, typer.Option(
        help="Site-private cache (MTT experts, privacy reports); default: the site id's, as join's.")] = None,
    verify_md5: Md5Option = True,
) -> None:
    """Distill locally, as a coordinator's request would, and write the sealed bundle plus a site-local preview."""
    dataset = dataset or dataset_of_file(data)
    if not dataset:
        raise ConfigError("--dataset is needed unless --data is an official MedMNIST file")
    # The federation's own presets, so the preview is what a default run would release.
    try:
        config = RunConfig(dataset=dataset, method=method, ipc=ipc, iterations=iterations, seed=seed,
                           epsilon=epsilon, delta=delta).distill_config()
    except ValidationError as exc:
        raise setting_error(exc, "option --{key}: {msg}") from None
    settings = SiteSettings(
        site_id=site_id, key_dir=key_dir, data_root=str(data),
        policy=SitePolicy.from_file(policy) if policy else SitePolicy(), device=device, verify_md5=verify_md5,
        cache_dir=find_cache_dir(cache_dir, site_id),
    )
    try:
        release, metrics = prepare_release(preview_request(dataset, config), settings)
    except ReleaseBlocked as exc:
        console.print(f"privacy report (site-local): {exc.report_page}", style="red", highlight=False)
        raise
    files = write_release(release, out)
    counts = ", ".join(f"class {c}: {n}" for c, n in release.manifest.class_counts.items())
    typer.echo(
        f"sealed bundle: {files.bundle} ({len(release.sealed)} bytes, sealed to coordinator key "
        f"{release.manifest.recipient_fingerprint[:16]}...)\n"
        f"synthetic images: {counts}; distilled in {metrics['distill-seconds']:.1f} s\n"
        f"site-local preview (not sent): {files.preview}\nsite-local manifest (not sent): {files.manifest}"
    )
    if release.manifest.privacy is not None:
        folder = privacy_report_folder(settings.cache_dir, release.manifest.run_id, release.manifest.nonce)
        typer.echo("\n".join(["privacy report (numbers signed into the manifest):",
                               *(f"  {line}" for line in summary_lines(release.manifest.privacy)),
                               f"full privacy report (site-local, not sent): {folder / REPORT_HTML}"]))


def inspect(
    bundle: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A sealed bundle file.")],
    coordinator_key: Annotated[
        Path | None, typer.Option(help="The coordinator's private key (coordinator.key): opens the bundle.")
    ] = None,
    site_key: Annotated[Path | None, typer.Option(help="The site's public signing key (signing.pub) to verify.")] = None,
    grid: Annotated[Path | None, typer.Option(help="Where to write the image grid (default <bundle>.grid.png).")] = None,
) -> None:
    """Show a bundle's clear header; with the coordinator's key and a site key, open, verify and draw it."""
    sealed = bundle.read_bytes()
    summary = summarize_bundle(sealed)
    table = Table(title=f"{bundle.name}: clear header (visible to anyone)")
    table.add_column("header field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in summary.header.model_dump().items():  # whoever made the bundle chose these
        table.add_row(name, untrusted_text(value, 1000))
    for name in ("total_bytes", "header_bytes", "ciphertext_bytes"):
        table.add_row(name, str(getattr(summary, name)))
    console.print(table)
    if coordinator_key is None:
        return
    if site_key is None:
        raise ConfigError("--site-key is needed to verify the signature when opening a bundle")
    opened = open_for_inspection(sealed, coordinator_key, site_key)
    verify_key = crypto.load_public_key(site_key, crypto.VerifyKey)
    typer.echo(f"decrypted; signature verified against site key {crypto.fingerprint(verify_key)[:16]}...")
    typer.echo(opened.manifest.model_dump_json(indent=2))
    grid_path = grid or bundle.with_name(f"{bundle.stem}.grid.png")
    opened_grid(opened).save(grid_path)
    typer.echo(f"image grid: {grid_path}")


@policy_app.command("init")
def policy_init(
    path: Annotated[Path, typer.Option("--path", help="Where to write the policy JSON.")] = Path("policy.json"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write the default site policy as JSON, to edit and point the node config's policy-file at."""
    write_default_policy(path, overwrite=force)
    typer.echo(f"default site policy written to {path}; `site-agent policy show --path {path}` explains each field")


@policy_app.command("show")
def policy_show(
    path: Annotated[Path | None, typer.Option("--path", help="A policy JSON (default: the built-in policy).")] = None,
) -> None:
    """Validate a policy file and show every limit with its meaning."""
    policy = SitePolicy.from_file(path) if path else SitePolicy()
    table = Table(title=f"site policy: {path or 'built-in defaults'}")
    table.add_column("field", no_wrap=True)
    table.add_column("value")
    table.add_column("meaning")
    for row in describe(policy):
        table.add_row(*row)
    console.print(table)


def _show_check(report: CheckReport) -> None:
    c, h, w = report.image_shape
    resized = f" (resized from {report.preprocessing.source_size()})" if report.preprocessing else ""
    table = Table("class", "name", *(s.split for s in report.splits),
                  title=f"{report.dataset} ({report.format.value}), images {h}x{w}x{c}{resized}")
    for cls, name in report.class_names.items():
        table.add_row(str(cls), name, *(_count(s.per_class[cls], report, s.split) for s in report.splits))
    table.add_section()
    table.add_row("", "total", *(str(s.images) for s in report.splits))
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    for problem in report.problems:
        console.print(f"refused: {problem}", style="red", highlight=False)
    if report.ok:
        console.print(f"ok: fit to distill (min_real_per_class {report.min_real_per_class})", style="green")


def _count(n: int, report: CheckReport, split: str) -> str:
    short = split == "train" and 0 < n < report.min_real_per_class
    return f"[red]{n}[/red]" if short else str(n)

