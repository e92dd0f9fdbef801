"""``site-agent review | approve | reject | audit | history``: the site operator's control over what leaves the site.

Thin, like ``site_agent.cli`` (which registers these commands): releases held for approval are
listed, shown and decided through ``site_agent.approval``; the audit log is read and checked through
``site_agent.audit``.

What the coordinator named (run ids, datasets) and what the files hold (release IDs, reviewers' names and
reasons) is printed through ``untrusted_text``: a run id written before run ids had a pattern, or a file
edited by hand, cannot print a second line or send the terminal an escape code.
"""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from shared.untrusted import untrusted_text
from site_agent import audit
from site_agent.approval import FolderApproval, HeldRelease, ReleaseStatus, approvals_dir_for
from site_agent.cli_tools import PolicyOption
from site_agent.policy import SitePolicy
from site_agent.review import privacy_headline, write_review_page
from site_agent.settings import find_cache_dir

audit_app = typer.Typer(help="The site's audit log: show it, or check its hash chain.", no_args_is_help=True)

CacheOption = Annotated[Path | None, typer.Option(
    help="The site's cache directory, if not its default (the node config's cache-dir, which join names).")]
SiteOption = Annotated[str | None, typer.Option(
    help="Which site's default cache (~/.cache/feddistill/<site-id>); needed only with several sites here.")]
ApprovalsOption = Annotated[
    Path | None, typer.Option(help="The approvals folder (default: the policy's approvals_dir, else <cache-dir>/approvals).")
]
ByOption = Annotated[str, typer.Option("--by", help="Who decides (recorded with the decision and in the audit log).")]


def register(app: typer.Typer) -> None:
    """Add these commands to the ``site-agent`` app."""
    app.command()(review)
    app.command()(approve)
    app.command()(reject)
    app.add_typer(audit_app, name="audit")
    app.command()(history)


def review(
    cache_dir: CacheOption = None, site_id: SiteOption = None, policy: PolicyOption = None,
    approvals_dir: ApprovalsOption = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open each held release's page in a browser.")] = False,
) -> None:
    """List the releases in the approvals folder and write a review page (review.html) for each held one."""
    approvals = _approvals(find_cache_dir(cache_dir, site_id), policy, approvals_dir)
    releases = approvals.releases()
    if not releases:
        typer.echo(f"no releases in {approvals.approvals_dir}")
        return
    for held in releases:  # ID first, whole, on its own: it is what approve and reject take
        run, dataset, method, ipc = _facts(held)
        typer.echo(f"{untrusted_text(held.id)}  {held.status.value}\n"
                   f"  run {run}: {dataset}, {method}, ipc {ipc}; {privacy_headline(held)}")
        if held.status == ReleaseStatus.HELD:
            page = write_review_page(held)
            typer.echo(f"  review page: {untrusted_text(page, 1000)}")
            if open_page:
                webbrowser.open(page.resolve().as_uri())
        elif held.decision is not None:
            decision = held.decision
            why = f": {untrusted_text(decision.reason, 2000)}" if decision.reason else ""
            typer.echo(f"  {held.status.value} by {untrusted_text(decision.by)} at {untrusted_text(decision.at)}{why}")


def approve(
    release_id: Annotated[str, typer.Argument(help="The release's ID, as `site-agent review` lists it.")],
    by: ByOption,
    cache_dir: CacheOption = None, site_id: SiteOption = None, policy: PolicyOption = None,
    approvals_dir: ApprovalsOption = None,
) -> None:
    """Approve a held release: the next time the coordinator asks, exactly its stored bundle is sent."""
    held = _approvals(find_cache_dir(cache_dir, site_id), policy, approvals_dir).approve(release_id, by)
    typer.echo(f"approved {untrusted_text(held.id)} (by {untrusted_text(by)}); it is sent when the coordinator asks "
               f"again for run {_run(held)}")


def reject(
    release_id: Annotated[str, typer.Argument(help="The release's ID, as `site-agent review` lists it.")],
    reason: Annotated[str, typer.Option(help="Why (sent to the coordinator, cut to 200 characters).")],
    by: ByOption,
    cache_dir: CacheOption = None, site_id: SiteOption = None, policy: PolicyOption = None,
    approvals_dir: ApprovalsOption = None,
) -> None:
    """Reject a held release: its sealed bundle is deleted and the coordinator is told it was rejected."""
    held = _approvals(find_cache_dir(cache_dir, site_id), policy, approvals_dir).reject(release_id, reason, by)
    typer.echo(f"rejected {untrusted_text(held.id)} (by {untrusted_text(by)}); its sealed bundle was deleted")


@audit_app.command("show")
def audit_show(cache_dir: CacheOption = None, site_id: SiteOption = None, policy: PolicyOption = None) -> None:
    """Print the audit log, one line per entry (not checked: `site-agent audit verify` checks it), then each
    coordinator's budget ledger: the DP epsilon spent (at the policy's lifetime_delta) and the answers given."""
    cache = find_cache_dir(cache_dir, site_id)
    entries = audit.read_entries(cache)
    if not entries:
        typer.echo(f"no audit log in {audit.audit_dir(cache)}")
    for entry in entries:
        typer.echo(audit.describe(entry))
    _show_ledgers(cache, policy)


@audit_app.command("verify")
def audit_verify(
    cache_dir: CacheOption = None,
    site_id: SiteOption = None,
    anchor: Annotated[str | None, typer.Option(
        help="An entry's hash noted earlier outside this machine (this command prints the head's): the log must "
        "still hold that entry.")] = None,
) -> None:
    """Check the audit log's hash chain; exits 1 naming the first bad entry.

    The chain is unkeyed: it shows edits by someone who did not recompute it. Note the head hash it prints
    somewhere this machine's users cannot write, and check with --anchor later that the log up to it is unchanged.
    """
    entries = audit.verify(find_cache_dir(cache_dir, site_id), anchor)
    head = f"; head: seq {entries[-1].seq}, hash {entries[-1].hash}" if entries else ""
    typer.echo(f"audit log intact: {len(entries)} entries, chain and head agree{head}"
               f"{'; it holds the anchored entry' if anchor else ''}")


HISTORY_COLUMNS = {"run_id": "run", "round": "round", "asked_at": "asked (UTC)", "method": "method", "ipc": "ipc",
                   "images": "images", "outcome": "outcome", "released_at": "released (UTC)",
                   "bundle_bytes": "bundle bytes", "test_images": "test images", "accuracy": "accuracy",
                   "balanced_accuracy": "balanced acc.", "auc": "AUC", "epsilon": "ε", "epsilon_spent": "ε spent"}


def history(
    cache_dir: CacheOption = None,
    site_id: SiteOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Every field of every record, as JSON, for scripts.")] = False,
    policy: PolicyOption = None,
) -> None:
    """What this site released, when, to which run, and how that run's global model scored on its test images.

    Read from the audit log (`site-agent audit verify` checks it has not been altered). A dpdm release shows the
    epsilon it was charged and the DP ledger after it; below the table, each coordinator's ledger as it stands."""
    from shared.tables import show, show_json
    from site_agent.history import site_history

    cache = find_cache_dir(cache_dir, site_id)
    records = [r.as_row() for r in site_history(audit.read_entries(cache))]
    if as_json:
        show_json(records)  # JSON escapes every control character
    elif not records:
        typer.echo(f"nothing asked of this site yet: no audit log in {audit.audit_dir(cache)}")
    else:
        rows = [{key: untrusted_text(value) if isinstance(value, str) else value for key, value in row.items()}
                for row in records]
        show(rows, HISTORY_COLUMNS, title=f"site record ({len(records)} requests), from the audit log")
        _show_ledgers(cache, policy)


def _show_ledgers(cache: Path, policy: Path | None) -> None:
    """Each coordinator's budget ledger (``site_agent.budget``), composed at the policy's lifetime_delta."""
    from site_agent.budget import ledger_lines  # the accountant loads only here

    for line in ledger_lines(cache, SitePolicy.from_file(policy) if policy else SitePolicy()):
        typer.echo(line)


def _approvals(cache: Path, policy: Path | None, approvals_dir: Path | None) -> FolderApproval:
    site_policy = SitePolicy.from_file(policy) if policy else SitePolicy()
    return FolderApproval(approvals_dir.expanduser() if approvals_dir else approvals_dir_for(site_policy, cache), cache)


def _facts(held: HeldRelease) -> tuple[str, str, str, str]:
    """Run id, dataset, method and ipc of a release, each shown as untrusted text."""
    about = held.manifest or held.request
    if about is None:
        return "?", "?", "?", "?"
    return (untrusted_text(about.run_id, 128), untrusted_text(about.dataset, 64), about.distill.method.value,
            str(about.distill.ipc))


def _run(held: HeldRelease) -> str:
    return _facts(held)[0]
