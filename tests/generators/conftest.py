"""Helpers of the generator tests. The tiny model and the real vLLM server serving it are
fixtures of ``tests/conftest.py``, shared with tests/training (one server per session)."""

from __future__ import annotations

from aigq.events import RegenerationRequest


def regeneration_request(
    user: str, version: int, t0: int, text: str = "running shoes"
) -> RegenerationRequest:
    """A valid request of ``user`` at ``t0`` (UTC ms) whose recent search is ``text``."""
    return RegenerationRequest(
        user_id=user,
        version=version,
        reason="drift",
        shift=0.7,
        event_ts=t0,
        created_ts=t0 + 10,
        fingerprint="fp",
        recent=((t0 - 60_000, "search", f"{user} {text}", ""),),
        profile=(("t:running", 1.0),),
    )
