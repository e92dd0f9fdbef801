"""What the README and the guides show a user works as shown."""

from __future__ import annotations

import json
from pathlib import Path

from site_agent.policy import SitePolicy

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
HOSPITAL_GUIDE = PROJECT / "docs" / "hospital.md"


def test_the_hospital_guides_policy_example_is_the_valid_default_policy() -> None:
    """The policy file in docs/hospital.md parses as a policy and equals what `site-agent policy init` writes."""
    block = HOSPITAL_GUIDE.read_text().split("```json", 1)[1].split("```", 1)[0]
    assert SitePolicy.model_validate(json.loads(block)) == SitePolicy()


def test_the_readme_opens_with_the_two_commands_ci_runs() -> None:
    """The README's first block is the install-and-main-job line `.ci/run` runs, then the default test tier."""
    first_block = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    ci = (PROJECT / ".ci" / "run").read_text().splitlines()
    assert first_block[0] in ci and first_block[0].startswith("pip install ")
    assert first_block[1] == "python -m pytest"
