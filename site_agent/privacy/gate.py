"""The policy gate: a release whose privacy report breaks a limit of the site's policy is blocked.

Nothing is sealed or sent. The coordinator learns only the names of the limits that failed, never
the measured values (they are statistics of patient data) and no pixel.
"""

from __future__ import annotations

from shared.errors import PolicyError
from shared.schemas import PrivacySummary
from site_agent.policy import PrivacyLimits


class ReleaseBlocked(PolicyError):
    """The privacy report failed the site's policy; the message names the failed limits only.

    ``report_page`` (site-local, never in the message) is the full report's HTML page.
    """

    def __init__(self, failed: list[str], report_page: str = "") -> None:
        super().__init__(
            f"release blocked by this site's privacy policy ({', '.join(failed)}); nothing was released",
            hint="the site's privacy report shows the measured values",
        )
        self.failed = failed
        self.report_page = report_page


def failed_limits(summary: PrivacySummary, limits: PrivacyLimits) -> list[str]:
    """Names of the policy limits ``summary`` breaks (empty: the release may go).

    A limit on membership inference fails when it could not be measured: without held-out images
    the site cannot show the release is safe, so it does not claim so.
    """
    failed = []
    auc, tpr = summary.strongest("auc"), summary.strongest("tpr_at_0_1pct_fpr")
    if limits.max_mia_auc is not None and (auc is None or auc >= limits.max_mia_auc):
        failed.append("max_mia_auc")
    tpr_limit = limits.max_mia_tpr_at_0_1pct_fpr
    if tpr_limit is not None and (tpr is None or tpr > tpr_limit):
        failed.append("max_mia_tpr_at_0_1pct_fpr")
    quantile = limits.min_nearest_real_quantile
    if quantile is not None and summary.nearest_real_flagged > 0:
        failed.append("min_nearest_real_quantile")
    return failed


def limit_names(limits: PrivacyLimits) -> list[str]:
    """The limits the policy sets (a limit set to null is reported but never blocks)."""
    names = ("max_mia_auc", "max_mia_tpr_at_0_1pct_fpr", "min_nearest_real_quantile")
    return [name for name in names if getattr(limits, name) is not None]


def enforce(summary: PrivacySummary, limits: PrivacyLimits, report_page: str = "") -> None:
    """Raises:
    ReleaseBlocked: the summary breaks a limit.
    """
    failed = failed_limits(summary, limits)
    if failed:
        raise ReleaseBlocked(failed, report_page)
