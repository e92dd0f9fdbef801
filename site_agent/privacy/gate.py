"""The policy gate: a release whose privacy report breaks a limit of the site's policy is blocked.

Nothing is sealed or sent, and the coordinator is told only that the site's privacy policy blocked it:
not which limit failed (a fact about patient data a coordinator could learn from by asking again), not
the measured values. Which limits failed, by how much, stays at the site: in the error's ``local_detail``
(the site's log), its audit log and the report's pages.

Membership limits are compared with the *upper end* of the metric's bootstrap 95 % interval, the most
the attack may reach given the site's sample: a small site's wide interval blocks rather than passes, and
another draw of the report's randomness rarely turns a block into a pass. The nearest-real limit is a
count with no interval: one flagged image blocks.
"""

from __future__ import annotations

import operator
from typing import Literal

from shared.errors import PolicyError
from shared.manifest import PrivacySummary
from site_agent.policy import PrivacyLimits

BLOCKED = "release blocked by this site's privacy policy; nothing was released"

Figure = Literal["auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"]


class ReleaseBlocked(PolicyError):
    """The privacy report failed the site's policy; the message says only that.

    ``failed`` (the limits' names), ``local_detail`` (names and figures) and ``report_page`` (the full
    report's HTML page) are site-local, never in the message.
    """

    def __init__(self, failed: list[str], report_page: str = "", reasons: list[str] | None = None) -> None:
        super().__init__(BLOCKED, hint="the site's privacy report shows the measured values",
                         local_detail="; ".join(reasons or failed))
        self.failed = failed
        self.report_page = report_page


def strongest_upper(summary: PrivacySummary, figure: Figure) -> float | None:
    """The upper end of the bootstrap interval of ``figure`` of the strongest attack (threshold or LiRA);
    None when none could be measured."""
    attacks = [a for a in (summary.threshold_attack, summary.lira) if a is not None]
    return max((getattr(a, figure).high for a in attacks), default=None)


def blocking_reasons(summary: PrivacySummary, limits: PrivacyLimits) -> dict[str, str]:
    """Each limit ``summary`` breaks -> why, with the measured figure (site-local; empty: the release may go).

    A limit on membership inference fails when it could not be measured: without held-out images
    the site cannot show the release is safe, so it does not claim so.
    """
    failed = {}
    # The AUC limit is reached at equality, the TPR limit only above it (as the policy's fields describe).
    for name, figure, breaks in (("max_mia_auc", "auc", operator.ge),
                                 ("max_mia_tpr_at_0_1pct_fpr", "tpr_at_0_1pct_fpr", operator.gt)):
        limit = getattr(limits, name)
        upper = strongest_upper(summary, figure)
        if limit is not None and upper is None:
            failed[name] = f"{name}: membership inference could not be measured (no held-out images)"
        elif limit is not None and breaks(upper, limit):
            failed[name] = (f"{name}: the strongest attack's {figure} may reach {upper:.3f} (upper end of its "
                            f"95 % interval; limit {limit:g})")
    quantile = limits.min_nearest_real_quantile
    if quantile is not None and summary.nearest_real_flagged > 0:
        failed["min_nearest_real_quantile"] = (
            f"min_nearest_real_quantile: {summary.nearest_real_flagged} synthetic images closer to a real one than "
            f"the {quantile:g} quantile of real-to-real distances (lowest rank {summary.nearest_real_min_rank:.4f})")
    return failed


def failed_limits(summary: PrivacySummary, limits: PrivacyLimits) -> list[str]:
    """Names of the policy limits ``summary`` breaks (empty: the release may go)."""
    return list(blocking_reasons(summary, limits))


def limit_names(limits: PrivacyLimits) -> list[str]:
    """The limits the policy sets (a limit set to null is reported but never blocks)."""
    names = ("max_mia_auc", "max_mia_tpr_at_0_1pct_fpr", "min_nearest_real_quantile")
    return [name for name in names if getattr(limits, name) is not None]


def enforce(summary: PrivacySummary, limits: PrivacyLimits, report_page: str = "") -> None:
    """Raises:
    ReleaseBlocked: the summary breaks a limit (its message names none).
    """
    reasons = blocking_reasons(summary, limits)
    if reasons:
        raise ReleaseBlocked(list(reasons), report_page, list(reasons.values()))
