"""The session pool: `--max_sessions` slots and the per-session counters `/sessions` shows."""

from __future__ import annotations

import time

import msgspec


class SessionStats(msgspec.Struct, kw_only=True):
    """Counters of one live session (no audio)."""

    session_id: str
    started_at: float  # unix seconds
    sample_rate: int
    audio_samples: int = 0  # client samples received, gaps included
    frames_sent: int = 0
    requests_in_flight: int = 0
    queued_frames: int = 0
    errors: int = 0


class SessionsReport(msgspec.Struct):
    count: int
    max_sessions: int
    sessions: list[SessionStats]


class SessionRegistry:
    """Bounded set of live sessions; a slot is freed the moment its session ends."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._live: dict[str, SessionStats] = {}

    def __len__(self) -> int:
        return len(self._live)

    def acquire(self, session_id: str, sample_rate: int) -> SessionStats | None:
        """A new session's stats, or None when every slot is taken."""
        if len(self._live) >= self.max_sessions:
            return None
        stats = SessionStats(session_id=session_id, started_at=time.time(), sample_rate=sample_rate)
        self._live[session_id] = stats
        return stats

    def release(self, session_id: str) -> None:
        self._live.pop(session_id, None)

    def report(self) -> SessionsReport:
        return SessionsReport(len(self._live), self.max_sessions, list(self._live.values()))
