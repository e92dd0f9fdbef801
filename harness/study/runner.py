"""Running a study: every arm not yet done, in order, with a progress bar; resumable; shares checked.

::

    <out-dir>/study-<dataset>/study.json      the settings and one record per finished arm (the raw JSON)
    <out-dir>/study-<dataset>/<arm key>/      each arm's own run folder (a pooled arm's is a full run folder)

A study stopped part way is continued by running the same command again: arms already in
``study.json`` are skipped, and an arm that stopped half way starts again. Growing the lists of seeds,
methods or ipcs adds arms; changing any other setting needs a new ``--out-dir``, since the finished
arms would no longer be comparable.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

from harness.study.arms import ArmRecord, dump, run_arm
from harness.study.plan import StudyConfig, arms
from shared.errors import ConfigError, FederationError

log = logging.getLogger(__name__)

RESULTS = "study.json"
GROWABLE = ("seeds", "methods", "ipcs")  # settings a resumed study may extend


class PartitionMismatch(FederationError):
    """Two arms of one seed did not train on the same shares: their figures cannot be compared."""


def study_folder(config: StudyConfig) -> Path:
    return Path(config.out_dir).expanduser().resolve() / f"study-{config.dataset}"


def load_records(folder: Path, config: StudyConfig) -> list[ArmRecord]:
    """The records of the finished arms in ``folder``, if it holds a study with compatible settings.

    Raises:
        ConfigError: the folder's study was run with other settings (other than more seeds, methods or ipcs).
    """
    path = folder / RESULTS
    if not path.exists():
        return []
    stored = json.loads(path.read_text())
    before = StudyConfig.model_validate(stored["config"]).model_dump(mode="json", exclude=set(GROWABLE))
    now = config.model_dump(mode="json", exclude=set(GROWABLE))
    changed = sorted(k for k in now if before.get(k) != now[k])
    if changed:
        raise ConfigError(f"{folder} holds a study with other settings ({', '.join(changed)}); continue it with the "
                          "same settings or choose another --out-dir")
    return [ArmRecord.model_validate(r) for r in stored["records"]]


def save_records(folder: Path, config: StudyConfig, records: list[ArmRecord]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"config": config.model_dump(mode="json"), "records": dump(records)}
    temporary = folder / f".{RESULTS}.tmp"
    temporary.write_text(json.dumps(payload, indent=1) + "\n")
    temporary.replace(folder / RESULTS)


def check_shares(records: list[ArmRecord]) -> None:
    """Every arm of a seed names the same share digest for every site.

    Raises:
        PartitionMismatch: naming the arms and the site that differ.
    """
    first: dict[int, ArmRecord] = {}
    for record in records:
        reference = first.setdefault(record.seed, record)
        if record.shares != reference.shares:
            sites = sorted(s for s in {**record.shares, **reference.shares}
                           if record.shares.get(s) != reference.shares.get(s))
            raise PartitionMismatch(f"seed {record.seed}: arms {reference.key} and {record.key} trained on different "
                                    f"shares (site {', '.join(sites)}); the study's figures would not be comparable")


def run_study(config: StudyConfig, progress: bool = True) -> tuple[Path, list[ArmRecord]]:
    """Run every arm of the study not yet in its folder; returns the folder and all records.

    Raises:
        ConfigError: the folder holds a study with other settings.
        PartitionMismatch: two arms of a seed saw different shares (checked after every arm).
        FederationError: an arm's federation did not complete (the finished arms are kept).
    """
    folder = study_folder(config)
    records = load_records(folder, config)
    done = {r.key for r in records}
    todo = [arm for arm in arms(config) if arm.key not in done]
    if done:
        log.info("resuming the study in %s: %d arms done, %d to run", folder, len(done), len(todo))
    bar = tqdm(todo, desc="study", unit="arm", disable=not progress)
    for arm in bar:
        bar.set_postfix_str(arm.key)
        records += run_arm(config, arm, folder)
        check_shares(records)
        save_records(folder, config, records)
    return folder, records
