"""The true caption of a keyframe, from a small grammar, and the facts a caption states.

One person: "a person in a red shirt is holding a knife in the shop" (no colour at night, when
the camera sees in grey). Two or more: "two people are fighting in the room", "three people are
walking in the corridor", "two people are in the room and one is lying on the floor". Nobody:
"nobody is at the entrance". What matters most for an alert comes first: a knife, then a fight,
then a fall, then a bag or a phone, then walking or standing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

PLACES = {"corridor": "in the corridor", "shop": "in the shop", "room": "in the room", "entrance": "at the entrance"}
COUNTS = {1: "a person", 2: "two people", 3: "three people"}
GROUP = "a group of people"
VERBS = {
    "walking": "walking",
    "standing": "standing",
    "fighting": "fighting",
    "falling": "falling",
    "lying": "lying on the floor",
}


@dataclass(frozen=True)
class Seen:
    """One person as the caption sees them."""

    action: str  # walking, standing, fighting, falling, lying
    held: str | None  # knife, bag, phone
    shirt: str  # colour name


@dataclass(frozen=True)
class Facts:
    """What a caption says, for scoring captions by category: the true facts are those of the
    true caption, so a predicted caption is judged on what the grammar lets a caption say."""

    count: str  # "0", "1", "2", "3", "group"
    action: str  # walking, standing, fighting, falling, lying, or "none" when not said
    held: str  # knife, bag, phone, or "none"
    colour: str  # the shirt of a lone person in colour light, or "none"
    place: str


def _importance(person: Seen) -> int:
    if person.held == "knife":
        return 0
    if person.action == "fighting":
        return 1
    if person.action in ("falling", "lying"):
        return 2
    if person.held is not None:
        return 3
    return 4


def _act(person: Seen) -> str:
    if person.held == "knife" or (person.held is not None and person.action in ("walking", "standing")):
        return f"holding a {person.held}"
    return VERBS[person.action]


def caption(people: Sequence[Seen], place: str, colour_visible: bool) -> str:
    where = PLACES[place]
    if not people:
        return f"nobody is {where}"
    if len(people) == 1:
        person = people[0]
        who = f"a person in a {person.shirt} shirt" if colour_visible else "a person"
        return f"{who} is {_act(person)} {where}"
    who = COUNTS.get(len(people), GROUP)
    top = min(people, key=_importance)
    if top.action == "fighting" and top.held != "knife":
        return f"{who} are fighting {where}"
    if _importance(top) <= 2:  # a knife, or someone falling or lying
        return f"{who} are {where} and one is {_act(top)}"
    actions = {p.action for p in people}
    if len(actions) == 1 and actions <= {"walking", "standing"}:
        return f"{who} are {actions.pop()} {where}"
    return f"{who} are {where}"


_COUNT_WORDS = {"a person": "1", "two people": "2", "three people": "3", GROUP: "group"}
_PATTERN = re.compile(
    r"^(?:nobody is (?P<empty>.+)"
    r"|(?P<who>a person|two people|three people|a group of people)(?: in a (?P<colour>\w+) shirt)? (?:is|are) "
    r"(?:(?P<act>.+?) )?(?P<where>in the \w+|at the \w+)(?: and one is (?P<one>.+))?)$"
)


def parse(text: str) -> Facts | None:
    """The facts a caption of this grammar states; None for a sentence outside the grammar."""
    match = _PATTERN.match(text.strip())
    if match is None:
        return None
    places = {phrase: name for name, phrase in PLACES.items()}
    if match["empty"] is not None:
        place = places.get(match["empty"])
        return Facts("0", "none", "none", "none", place) if place else None
    place = places.get(match["where"])
    if place is None:
        return None
    act = match["one"] or match["act"] or ""
    held = "none"
    action = "none"
    if act.startswith("holding a "):
        held = act.removeprefix("holding a ")
    elif act:
        action = next((name for name, verb in VERBS.items() if verb == act), "unknown")
    return Facts(_COUNT_WORDS[match["who"]], action, held, match["colour"] or "none", place)
