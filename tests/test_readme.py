"""What the README shows a user works as shown."""

from __future__ import annotations

import json
from pathlib import Path

from site_agent.policy import SitePolicy

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_policy_example_is_the_valid_default_policy() -> None:
    """The policy file in the README parses as a policy and equals what `site-agent policy init` writes."""
    block = README.read_text().split("```json", 1)[1].split("```", 1)[0]
    assert SitePolicy.model_validate(json.loads(block)) == SitePolicy()
