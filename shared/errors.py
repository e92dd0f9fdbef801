"""The project's errors: one base class with a hint, one subclass per kind of failure.

Messages name the field and the value in one sentence. They may travel from a site to the
coordinator inside Flower's error reply, so they never contain paths, patient ids or pixel
statistics.
"""

from __future__ import annotations


class FedDistillError(Exception):
    """Base class of every error this project raises on purpose.

    The message is safe to send to the other party; ``local_detail`` (which file, which folder) is for this
    machine's operator only: :meth:`diagnostics`, which only local command lines and logs print, includes it.
    """

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, local_detail: str = "") -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint
        self.local_detail = local_detail

    def diagnostics(self) -> str:
        """The message, the local detail when there is one, and what the user can do about it."""
        text = f"{self}\n{self.local_detail}" if self.local_detail else str(self)
        return f"{text}\nhint: {self.hint}" if self.hint else text


class ConfigError(FedDistillError):
    """A setting is missing, malformed or out of its allowed range."""

    hint = ("fix the setting named above: the option of the command you ran (`--help` lists them), or the same "
            "key in a --set, a policy file or a site's node config")


class LocalConfigError(ConfigError):
    """A local setting file is bad in a way only its name or path makes actionable (a site's policy file).

    The message stays safe to send (no paths, no file names); ``local_detail`` names the file for the
    site's own operator and is never sent. :meth:`diagnostics`, which only the local command lines print,
    includes it.
    """


class DataError(FedDistillError):
    """Local data cannot be read, fails its checksum or does not fit the task."""

    hint = ("point the data path (site-agent --data, a node's data-root, coordinator --data-root) or MEDMNIST_ROOT "
            "at the MedMNIST .npz files or the site's own images")


class LocalDataError(DataError):
    """Local data is bad in a way only file names make actionable.

    The message stays safe to send (no paths); ``local_detail`` names the files for the site's own
    operator (``site-agent check``) and is never sent.
    """


class KeyFileError(FedDistillError):
    """A key file is missing, unreadable, open to other users or of the wrong kind.

    A site loads its keys for every request, so the message stays safe to send (the kind of key, no paths,
    no file names); ``local_detail`` names the file for the site's own operator and is never sent.
    :meth:`diagnostics`, which only the local command lines print, includes it.
    """

    hint = "check the key directory option of the command you ran and the files in it"


# The step that makes each key file, for the hint of a KeyFileError that finds it missing.
_SITE_INIT = "create this site's keys with `site-agent init --key-dir DIR`"
_MAKES_KEY_FILE = {
    **dict.fromkeys(("signing.key", "signing.pub", "node.key", "node.pub"), _SITE_INIT),
    "coordinator.pub": ("pin the coordinator's public key at this site: `site-agent trust-coordinator --key-dir DIR "
                        "--public-key coordinator.pub --fingerprint <read out of band>`"),
    "coordinator.key": "create the coordinator's key with `coordinator init`",
    "superlink-ca.crt": "copy the SuperLink's CA certificate (the coordinator's tls/ca.crt) into the key directory",
}
KEYS_EXIST_HINT = ("keys are never overwritten: use the ones there, or move that folder away to make new ones (a "
                   "site's new keys must then be registered again with `coordinator sites add`; a new coordinator "
                   "key must be pinned again by every site)")


def missing_key_hint(file_name: str) -> str:
    """The command that creates a missing key file, or where to look when it is not one of ours."""
    return _MAKES_KEY_FILE.get(file_name, KeyFileError.hint)


class PolicyError(FedDistillError):
    """A request asks a site for more than the site's own policy allows."""

    hint = "lower the request (e.g. --ipc, --iterations) or raise the limit in the site's policy"


class TimeLimitReached(PolicyError):
    """The request ran into the site's time limit (policy ``max_seconds``): its work was stopped, nothing released.

    ``seconds`` is the limit. The message is safe to send: it names the limit, nothing else.
    """

    hint = ("ask for less work (fewer iterations, smaller batches or network) or ask the site to raise max_seconds "
            "in its policy")

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request was stopped at the site's time limit of {seconds:g} s (max_seconds); "
                         "nothing was released")
        self.seconds = seconds


class ApprovalPending(PolicyError):
    """A release is held for the site operator's manual approval; nothing was sent.

    ``folder`` (site-local, never in the message) is where the held release waits.
    """

    hint = "the site's operator reviews it (`site-agent review`), then `site-agent approve ID --by NAME` or `reject`"

    def __init__(self, message: str, *, folder: str = "") -> None:
        super().__init__(message)
        self.folder = folder


class ReleaseRejected(PolicyError):
    """The site's own reviewer rejected the release this request asks for; nothing was sent, nor will be."""

    hint = "the site's operator rejected this release; ask them, or start a new run for a newly distilled set"


class AuditLogError(FedDistillError):
    """The site's audit log is malformed or its hash chain is broken; the message names the first bad entry."""

    hint = "the audit log was edited, reordered or cut short; keep the file as it is for the site's investigation"


class InvalidBundle(FedDistillError):
    """A received bundle cannot be parsed or fails validation."""


class DecryptionError(InvalidBundle):
    """A bundle cannot be decrypted with this coordinator's key and the bound header."""


class VerificationError(InvalidBundle):
    """A bundle's signature does not match the key registered for its site."""


class ReplayError(InvalidBundle):
    """A bundle belongs to another run, another request nonce, or was already received."""


class InvalidReply(FedDistillError):
    """A site's evaluation reply is malformed, inconsistent or out of range."""


class FederationError(FedDistillError):
    """The federation cannot go on: too few sites answered or were accepted."""

    hint = "check that enough sites are online, or lower min-sites"
