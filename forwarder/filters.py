"""A sink's own choice of events: include and exclude lists of glob patterns
matched against ``event_type``."""

from __future__ import annotations

import fnmatch
import re


class EventTypeFilter:
    """Accepts an event type matched by an include pattern and by no exclude
    pattern. Answers are cached: an organization has a hundred-odd types.
    The cache stops growing at CACHE_LIMIT entries, so that a stream of
    made-up types (a broken or hostile reply) cannot fill the memory."""

    CACHE_LIMIT = 4096

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self._include = _compile(include)
        self._exclude = _compile(exclude) if exclude else None
        self._answers: dict[str, bool] = {}
        # The default: the pipeline need not ask about each event.
        self.accepts_everything = "*" in include and not exclude

    def accepts(self, event_type: object) -> bool:
        if not isinstance(event_type, str):
            # An event without a type matches no pattern, yet dropping it here
            # would lose it silently: it goes on, and the sink forwards it.
            return True
        answer = self._answers.get(event_type)
        if answer is None:
            answer = self._include.match(event_type) is not None and (
                self._exclude is None or self._exclude.match(event_type) is None
            )
            if len(self._answers) < self.CACHE_LIMIT:
                self._answers[event_type] = answer
        return answer


def _compile(patterns: list[str]) -> re.Pattern[str]:
    if not patterns:
        return re.compile(r"(?!)")
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
