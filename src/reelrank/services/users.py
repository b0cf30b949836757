"""The users use case: a user's controls (mutes, "reset my feed") and profile read."""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import NotFound
from ..schema import UserControls, parse
from ..state.online import OnlineState
from ..storage import CatalogStore
from ..types import UserMutes


class UserService:
    def __init__(self, catalog: CatalogStore, state: OnlineState, lock: threading.RLock) -> None:
        self.catalog = catalog
        self.state = state
        self.lock = lock  # serialises catalog writers

    def controls(self, user_id: str) -> dict[str, Any]:
        mutes = self.state.mutes.get(user_id)
        at, generation = self.state.resets.get(user_id, (0.0, 0))
        return {
            "muted_keywords": mutes.keywords if mutes else [],
            "muted_hashtags": mutes.hashtags if mutes else [],
            "reset_at": at,
            "generation": generation,
        }

    def set_controls(self, user_id: str, raw: Any) -> dict[str, Any]:
        """Replace the user's muted keywords and hashtags."""
        controls: UserControls = parse(UserControls, raw, "body")
        with self.lock:
            mutes = UserMutes.of(controls.muted_keywords, controls.muted_hashtags)
            body = self.controls(user_id)
            body.update(muted_keywords=mutes.keywords, muted_hashtags=mutes.hashtags)
            self.catalog.put_control("user", user_id, body)  # durable, then applied
            with self.state.lock:
                self.state.set_controls(user_id, body)
        return body

    def reset(self, user_id: str) -> dict[str, Any]:
        """ "Reset my feed": forget the learned profile (affinities, session, recent likes,
        the model's embedding of the user); keep follows, hides and mutes."""
        if not self.state.knows_user(user_id):
            raise NotFound(f"unknown user {user_id!r}")
        with self.lock:
            body = self.controls(user_id)
            body["reset_at"], body["generation"] = time.time(), body["generation"] + 1
            self.catalog.put_control("user", user_id, body)
            with self.state.lock:
                self.state.set_controls(user_id, body)
                self.state.reset_user(user_id)
        return body

    def profile(self, user_id: str) -> dict[str, Any]:
        state = self.state
        if not state.knows_user(user_id):
            raise NotFound(f"unknown user {user_id!r}")
        profile = state.profiles.get(user_id)
        user = state.users.get(user_id)
        out: dict[str, Any] = {
            "user": profile.model_dump(mode="json") if profile else {"id": user_id},
            "follows": sorted(state.follows.get(user_id, ())),
            "controls": self.controls(user_id),
        }
        if user is None:
            out.update(
                top_interests={"hashtags": [], "sounds": [], "creators": []},
                hidden_creators=[],
                hidden_sounds=[],
                not_interested=[],
                session=[],
                seen=0,
                engagements=0,
            )
            return out
        now = user.last_ts or time.time()

        def top(aff: Any) -> list[dict[str, Any]]:
            return [{"id": k, "weight": round(w, 4)} for k, w in aff.top(now, 10)]

        table = state.table
        out.update(
            top_interests={
                "hashtags": top(user.tags),
                "sounds": top(user.sounds),
                "creators": top(user.creators),
            },
            hidden_creators=sorted(user.hidden_creators),
            hidden_sounds=sorted(user.hidden_sounds),
            not_interested=sorted(table.video(r).id for r in list(user.not_interested)),
            session=[{"video_id": v, "type": t, "ts": ts} for v, t, ts in list(user.session)],
            seen=len(user.seen),
            engagements=user.engagements,
        )
        return out
