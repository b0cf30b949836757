"""Machine review: a pipeline of pluggable checks whose most severe finding decides.

Each check looks at an uploaded video and may return a finding: approve (nothing to
say), hold for human review, or reject. The Reviewer runs them all, keeps every finding
for the audit log, and combines the verdict with the video's previous record so that a
person's decision is not undone by the machine: a rejection or take-down survives any
re-upload of the same id, and a person's approval survives an upsert that leaves what
the checks read unchanged.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from ..errors import ConfigError, InvalidInput
from ..schema import AuditEntry, ReviewStatus, Video, VideoIn

MACHINE = "machine"


class Outcome(IntEnum):
    """A check's verdict, ordered by severity: the most severe finding wins."""

    APPROVE = 0
    HOLD = 1  # human review
    REJECT = 2


STATUS_OF = {
    Outcome.APPROVE: ReviewStatus.APPROVED,
    Outcome.HOLD: ReviewStatus.PENDING_REVIEW,
    Outcome.REJECT: ReviewStatus.REJECTED,
}


@dataclass(frozen=True)
class Finding:
    check: str
    outcome: Outcome
    reason: str

    def describe(self) -> str:
        return f"{self.check}: {self.reason}"


class ReviewCheck(Protocol):
    """One machine check; None means it has nothing to say about the video."""

    name: str

    def check(self, video: VideoIn) -> Finding | None: ...


class TermsCheck:
    """Whole-word, case-insensitive terms in the caption or hashtags."""

    def __init__(self, name: str, terms: list[str], outcome: Outcome) -> None:
        self.name = name
        self.outcome = outcome
        words = sorted({t.strip().lower().lstrip("#") for t in terms if t.strip()})
        self._pattern = (
            re.compile(r"(?<!\w)(" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)
            if words
            else None
        )

    def check(self, video: VideoIn) -> Finding | None:
        if self._pattern is None:
            return None
        found = self._pattern.search(video.caption + " " + " ".join(video.hashtags))
        if found is None:
            return None
        return Finding(self.name, self.outcome, f"contains the term {found.group(1).lower()!r}")


class PolicyCheck:
    """Shape rules: hashtag stuffing and over-long uploads go to a person."""

    name = "policy"

    def __init__(self, max_hashtags: int, max_duration_ms: int) -> None:
        self.max_hashtags = max_hashtags
        self.max_duration_ms = max_duration_ms

    def check(self, video: VideoIn) -> Finding | None:
        if len(video.hashtags) > self.max_hashtags:
            return Finding(
                self.name,
                Outcome.HOLD,
                f"{len(video.hashtags)} hashtags, more than {self.max_hashtags}",
            )
        if video.duration_ms > self.max_duration_ms:
            return Finding(
                self.name,
                Outcome.HOLD,
                f"{video.duration_ms / 1000:.0f} s long, more than "
                f"{self.max_duration_ms / 1000:.0f} s",
            )
        return None


class ClassifierCheck:
    """A pluggable model: `classify(video) -> probability the video breaks policy`."""

    name = "classifier"

    def __init__(
        self, classify: Callable[[VideoIn], float], hold_at: float, reject_at: float
    ) -> None:
        self.classify = classify
        self.hold_at = hold_at
        self.reject_at = reject_at

    @classmethod
    def load(cls, spec: str, hold_at: float, reject_at: float) -> ClassifierCheck:
        """From `module:function`; a bad spec is a configuration error."""
        module_name, _, attr = spec.partition(":")
        try:
            classify = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"review_classifier: cannot load {spec!r}: {exc}") from None
        if not callable(classify):
            raise ConfigError(f"review_classifier: {spec!r} is not callable")
        return cls(classify, hold_at, reject_at)

    def check(self, video: VideoIn) -> Finding | None:
        p = float(self.classify(video))
        if p >= self.reject_at:
            return Finding(self.name, Outcome.REJECT, f"violation probability {p:.2f}")
        if p >= self.hold_at:
            return Finding(self.name, Outcome.HOLD, f"violation probability {p:.2f}")
        return None


def _checked_fields(video: VideoIn) -> tuple[object, ...]:
    """What the checks read: an approval stands while these are unchanged."""
    return (video.caption, tuple(video.hashtags), video.duration_ms, video.media_hash)


@dataclass(frozen=True)
class Review:
    video: Video
    findings: list[Finding]
    kept: bool  # the previous decision stood (the machine verdict did not apply)


class Reviewer:
    """Runs every check on ingest and decides the video's status."""

    def __init__(self, checks: list[ReviewCheck]) -> None:
        self.checks = checks

    def review(
        self,
        video: VideoIn,
        previous: Video | None,
        extra: list[Finding] = (),  # type: ignore[assignment]
        duplicate_of: str | None = None,
    ) -> Review:
        """The reviewed record; `extra` findings come from checks that need the catalog
        (duplicates)."""
        findings = [f for c in self.checks if (f := c.check(video)) is not None]
        findings.extend(extra)
        worst = max(findings, key=lambda f: f.outcome, default=None)
        # `video` is validated; the record only adds server fields, so it is built
        # without validating again (which dominated bulk uploads).
        fields = video.model_dump()
        if previous is not None:
            fields["duplicate_of"] = previous.duplicate_of
            fields["report_baseline"] = previous.report_baseline
        if duplicate_of is not None:
            fields["duplicate_of"] = duplicate_of
        decided_by_person = previous is not None and previous.reviewed_by not in (None, MACHINE)
        if decided_by_person and previous is not None:
            unchanged = _checked_fields(previous) == _checked_fields(video)
            held = previous.status in (
                ReviewStatus.REJECTED,
                ReviewStatus.HIDDEN,
                ReviewStatus.PENDING_REVIEW,
            )
            if held or unchanged:
                return Review(
                    Video.model_construct(
                        **fields,
                        status=previous.status,
                        status_reason=previous.status_reason,
                        reviewed_by=previous.reviewed_by,
                    ),
                    findings,
                    kept=True,
                )
        if worst is None or worst.outcome is Outcome.APPROVE:
            reason = None
            if fields.get("duplicate_of"):
                reason = next(
                    (f.describe() for f in findings if f.check == "duplicate"),
                    previous.status_reason if previous is not None else None,
                )
            return Review(
                Video.model_construct(
                    **fields,
                    status=ReviewStatus.APPROVED,
                    status_reason=reason,
                    reviewed_by=MACHINE,
                ),
                findings,
                kept=False,
            )
        reasons = "; ".join(f.describe() for f in findings if f.outcome is worst.outcome)
        return Review(
            Video.model_construct(
                **fields,
                status=STATUS_OF[worst.outcome],
                status_reason=reasons,
                reviewed_by=MACHINE,
            ),
            findings,
            kept=False,
        )


def default_checks(
    banned_terms: list[str],
    rejected_terms: list[str],
    max_hashtags: int,
    max_duration_ms: int,
    classifier: str,
    classifier_hold: float,
    classifier_reject: float,
) -> list[ReviewCheck]:
    checks: list[ReviewCheck] = [
        TermsCheck("rejected_terms", rejected_terms, Outcome.REJECT),
        TermsCheck("banned_terms", banned_terms, Outcome.HOLD),
        PolicyCheck(max_hashtags, max_duration_ms),
    ]
    if classifier:
        checks.append(ClassifierCheck.load(classifier, classifier_hold, classifier_reject))
    return checks


def machine_entry(video: Video, review: Review) -> AuditEntry:
    """The audit entry of a machine review decision."""
    action = {
        ReviewStatus.APPROVED: "review.approve",
        ReviewStatus.PENDING_REVIEW: "review.hold",
        ReviewStatus.REJECTED: "review.reject",
        ReviewStatus.HIDDEN: "review.keep",
    }[video.status]
    if review.kept:
        action = "review.keep"
    return AuditEntry(
        ts=time.time(),
        actor=video.reviewed_by or MACHINE,
        action=action,
        target_kind="video",
        target_id=video.id,
        reason=video.status_reason or "no findings",
        detail={
            "status": video.status.value,
            "findings": [
                {"check": f.check, "outcome": f.outcome.name.lower(), "reason": f.reason}
                for f in review.findings
            ],
            **({"duplicate_of": video.duplicate_of} if video.duplicate_of else {}),
        },
    )


# -- admin input -------------------------------------------------------------------------
REPORTS = "reports"  # the actor of decisions that viewers' reports triggered


def checked_actor(name: str | None) -> str:
    """A person's name as given to an admin call; the metric label is 'person'."""
    name = (name or "").strip()
    if not name:
        raise InvalidInput("reviewer", "name the person making the decision")
    if name in (MACHINE, REPORTS):
        raise InvalidInput("reviewer", f"{name!r} is reserved for automatic decisions")
    return name


def actor_label(actor: str) -> str:
    """The metric label: people are counted together, not by name."""
    return actor if actor in (MACHINE, REPORTS) else "person"


def checked_reason(reason: Any) -> str:
    """A reason given to an admin call, for the audit log."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("reason", "give a reason (it goes to the audit log)")
    if len(reason) > 2000:
        raise InvalidInput("reason", "at most 2000 characters")
    return reason.strip()
