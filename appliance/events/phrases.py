"""Composed descriptions and alert texts, from small templates per language (``APPLIANCE_LANGUAGE``).

Only validated facts are put into words here (see ``appliance.events.facts``): the sentence a user
reads first says what a model fit for the camera saw, and nothing else. The captioner's own
sentence stays in the language it was trained in.
"""

from __future__ import annotations

from dataclasses import dataclass

LANGUAGES = ("en", "ko")


@dataclass(frozen=True, kw_only=True)
class Templates:
    people: tuple[str, str, str]  # nobody, one person, {n} people; each may use {camera}
    down: tuple[str, str]  # one down, {n} down
    holding: str  # {thing}
    fighting: str
    join: str  # between the parts of a description
    levels: dict[str, str]  # alert level -> its word
    alert: str  # {level} {camera} {what} {description}
    kinds: dict[str, str]  # alert kind -> its words
    things: dict[str, str]  # detector class -> its name (the class itself where absent)


TEMPLATES = {
    "en": Templates(
        people=("nobody on {camera}", "1 person on {camera}", "{n} people on {camera}"),
        down=("one is lying on the ground", "{n} are lying on the ground"),
        holding="one is holding {thing}",
        fighting="they appear to be fighting",
        join="; ",
        levels={"warning": "Warning", "alarm": "Alarm"},
        alert="{level} on {camera}: {what}. {description}",
        kinds={"fall": "someone is down", "violence": "possible violence"},
        things={
            "knife": "a knife",
            "scissors": "scissors",
            "gun": "a gun",
            "bag": "a bag",
            "backpack": "a backpack",
            "handbag": "a handbag",
            "suitcase": "a suitcase",
            "phone": "a phone",
            "cell phone": "a phone",
        },
    ),
    "ko": Templates(
        people=("{camera}: 사람 없음", "{camera}: 1명", "{camera}: {n}명"),
        down=("1명이 쓰러져 있음", "{n}명이 쓰러져 있음"),
        holding="{thing}을(를) 든 사람 있음",
        fighting="싸우는 것으로 보임",
        join=", ",
        levels={"warning": "주의", "alarm": "경보"},
        alert="[{level}] {camera}: {what}. {description}",
        kinds={"fall": "쓰러진 사람", "violence": "폭력 의심"},
        things={
            "knife": "칼",
            "scissors": "가위",
            "gun": "총",
            "bag": "가방",
            "backpack": "배낭",
            "handbag": "핸드백",
            "suitcase": "여행 가방",
            "phone": "휴대전화",
            "cell phone": "휴대전화",
        },
    ),
}


def describe(language: str, camera: str, *, people: int, down: int, holding: tuple[str, ...], fighting: bool) -> str:
    """A description of what was seen, e.g. ``3 people on Front path; one is lying on the ground``."""
    t = TEMPLATES[language]
    parts = [t.people[min(people, 2)].format(camera=camera, n=people)]
    if down:
        parts.append(t.down[0] if down == 1 else t.down[1].format(n=down))
    parts += [t.holding.format(thing=t.things.get(thing, thing)) for thing in dict.fromkeys(holding)]
    if fighting:
        parts.append(t.fighting)
    return t.join.join(parts)


def alert_text(language: str, camera: str, *, level: str, kinds: tuple[str, ...], description: str) -> str:
    """The text of an alert, fit for a phone's notification."""
    t = TEMPLATES[language]
    what = t.join.join(t.kinds[kind] for kind in kinds)
    return t.alert.format(level=t.levels[level], camera=camera, what=what, description=description)
