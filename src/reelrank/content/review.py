"""Machine review in its first form: banned terms hold a video for human review."""

from __future__ import annotations

import re

from ..schema import ReviewStatus, Video, VideoIn


class BannedTermsRule:
    """Holds a video whose caption or hashtags contain a banned term (whole words,
    case-insensitive)."""

    name = "banned_terms"

    def __init__(self, terms: list[str]) -> None:
        words = sorted({t.strip().lower().lstrip("#") for t in terms if t.strip()})
        self._pattern = (
            re.compile(r"(?<!\w)(" + "|".join(map(re.escape, words)) + r")(?!\w)", re.IGNORECASE)
            if words
            else None
        )

    def check(self, video: VideoIn) -> str | None:
        """The reason to hold the video, or None."""
        if self._pattern is None:
            return None
        text = video.caption + " " + " ".join(video.hashtags)
        found = self._pattern.search(text)
        return f"contains banned term {found.group(1).lower()!r}" if found else None


class Reviewer:
    """Runs the rules on ingest; the first that holds a video decides."""

    def __init__(self, banned_terms: list[str]) -> None:
        self.rules = [BannedTermsRule(banned_terms)]

    def review(self, video: VideoIn) -> Video:
        for rule in self.rules:
            reason = rule.check(video)
            if reason is not None:
                return Video(
                    **video.model_dump(),
                    status=ReviewStatus.PENDING_REVIEW,
                    status_reason=f"{rule.name}: {reason}",
                )
        return Video(**video.model_dump(), status=ReviewStatus.APPROVED)
