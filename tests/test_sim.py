"""The synthetic world: deterministic, truthful about what it draws, and its scenario files valid."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from appliance.inference.detector import iou_one_to_many
from appliance.sim import captions
from appliance.sim.backdrop import Shadow, ground_mask
from appliance.sim.figure import ACTIONS, OBJECTS, SHIRT_COLOURS, Placement, draw, pose, random_appearance, silhouette
from appliance.sim.render import PersonTruth, Renderer, Stage
from appliance.sim.scenario import ScenarioError, list_scenarios, load_scenario, parse_scenario
from appliance.sim.snapshots import snapshots
from appliance.sim.world import Actor

SHIPPED = (
    "corridor-walk",
    "empty-lighting",
    "entrance-night",
    "hall-bag",
    "home-fall",
    "room-fight",
    "shop-knife",
    "two-angles",
)


def test_every_shipped_scenario_loads_and_renders_each_camera() -> None:
    scenarios = list_scenarios()
    assert [s.name for s in scenarios] == list(SHIPPED)
    for scenario in scenarios:
        assert scenario.description
        for view in range(len(scenario.cameras)):
            frame = Renderer(scenario, view, seed=0).frame(scenario.frames // 2)
            assert frame.image.shape == (scenario.height, scenario.width, 3)
            assert frame.image.dtype == np.uint8


def test_the_same_seed_gives_the_same_frames_in_any_order() -> None:
    scenario = load_scenario("shop-knife")
    first = Renderer(scenario, 1, seed=4)
    frames = [first.frame(i) for i in (0, 55, 120)]
    again = Renderer(scenario, 1, seed=4)
    for index, frame in zip((120, 0, 55), (again.frame(120), again.frame(0), again.frame(55)), strict=True):
        expected = frames[(0, 55, 120).index(index)]
        assert np.array_equal(frame.image, expected.image)
        assert frame.truth == expected.truth
    other = Renderer(scenario, 1, seed=5).frame(55)
    assert not np.array_equal(other.image, frames[1].image)
    a = [s.image for s in snapshots(seed=3, count=5)]
    b = [s.image for s in snapshots(seed=3, count=5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _changed_box(before: np.ndarray, after: np.ndarray) -> tuple[float, float, float, float] | None:
    changed = np.argwhere((np.abs(before.astype(int) - after.astype(int)) > 8).any(axis=2))
    if changed.size == 0:
        return None
    (y1, x1), (y2, x2) = changed.min(axis=0), changed.max(axis=0)
    return (float(x1), float(y1), float(x2 + 1), float(y2 + 1))


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("turn", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("height", [24.0, 90.0, 300.0])
def test_the_box_of_a_figure_is_where_its_pixels_are(action: str, turn: float, height: float) -> None:
    look = random_appearance(np.random.default_rng(0), "red")
    for phase in (0.0, 0.3, 0.7):
        blank = np.full((420, 800, 3), 128, np.uint8)
        image = blank.copy()
        joints, placement = pose(action, phase, turn, None), Placement(500.0, 380.0, height, 1)
        draw(image, joints, placement, look, None)
        box = silhouette(joints, placement).box
        drawn = _changed_box(blank, image)
        assert drawn is not None
        # the box is the drawn pixels': faint anti-aliased fringes may reach a pixel beyond it
        assert np.allclose(box, drawn, atol=1.0), (box, drawn)
        assert iou_one_to_many(np.array(box), np.array([drawn]))[0] >= (0.8 if height < 30 else 0.9), (box, drawn)


@pytest.mark.parametrize("held", OBJECTS)
@pytest.mark.parametrize("action", ["walking", "standing", "fighting"])
@pytest.mark.parametrize("height", [60.0, 300.0])
def test_the_box_of_a_held_object_is_where_its_pixels_are(held: str, action: str, height: float) -> None:
    """What a person holds has a truth box of its own (the detector learns knife, bag and phone from it):
    the pixels drawn with the object and not without it lie in that box."""
    look = random_appearance(np.random.default_rng(0), "red")
    for phase in (0.0, 0.3, 0.7):
        joints, placement = pose(action, phase, 0.3, held), Placement(400.0, 380.0, height, 1)
        bare, holding = (np.full((420, 800, 3), 128, np.uint8) for _ in range(2))
        assert draw(bare, joints, placement, look, None) is None
        box = draw(holding, joints, placement, look, held)
        assert box is not None
        drawn = _changed_box(bare, holding)
        assert drawn is not None
        # within the anti-aliased fringe, a little more where the knife's round-capped strokes are thick
        assert np.allclose(box, drawn, atol=max(1.5, height / 100)), (held, box, drawn)
        assert iou_one_to_many(np.array(box), np.array([drawn]))[0] >= 0.6, (held, box, drawn)  # a phone: 4x6 px


def test_truth_reads_back_with_the_held_box_and_without_one_from_older_files() -> None:
    truth = PersonTruth("p1", (1.0, 2.0, 30.0, 80.0), "standing", "knife", "red", 1.0, False, (20.0, 40.0, 28.0, 52.0))
    assert PersonTruth.from_json(truth.to_json()) == truth
    older = {k: v for k, v in truth.to_json().items() if k != "held_box"}
    assert PersonTruth.from_json(older).held_box is None


def test_truth_boxes_are_the_people_drawn_in_the_scene() -> None:
    """Render a scene with and without its people, same light and noise: the difference is the people."""
    scenario = load_scenario("room-fight")
    renderer = Renderer(scenario, 0, seed=0)
    checked = 0
    for index in (60, 120, 160, 250):
        t = index / scenario.fps
        actors = renderer.world.actors_at(t)
        with_people = renderer.stage.render(actors, t, np.random.default_rng(index))
        without = renderer.stage.render([], t, np.random.default_rng(index))
        for person in with_people[1]:
            # pixels changed inside the person's box and nowhere far from it
            x1, y1, x2, y2 = (round(v) for v in person.box)
            diff = (np.abs(with_people[0].astype(int) - without[0].astype(int)) > 8).any(axis=2)
            inside = diff[max(y1 - 2, 0) : y2 + 2, max(x1 - 2, 0) : x2 + 2].sum()
            assert inside >= 0.25 * (x2 - x1) * (y2 - y1), person
            checked += 1
        union = np.zeros(with_people[0].shape[:2], bool)
        for person in with_people[1]:
            x1, y1, x2, y2 = (round(v) for v in person.box)
            union[max(y1 - 2, 0) : y2 + 2, max(x1 - 25, 0) : x2 + 25] = True  # held objects stick out sideways
        diff = (np.abs(with_people[0].astype(int) - without[0].astype(int)) > 8).any(axis=2)
        assert not (diff & ~union).any(), f"frame {index}: drawn pixels outside every truth box"
    assert checked >= 4


def test_a_person_leaving_the_image_becomes_ignored() -> None:
    scenario = load_scenario("corridor-walk")
    renderer = Renderer(scenario, 0, seed=0)
    states = []
    for index in range(scenario.frames // 2):
        people = renderer.frame(index).truth.people
        if people:
            states.append((people[0].visible, people[0].ignore))
    assert states[0] == (1.0, False)  # far down the corridor, whole
    assert any(ignore for _, ignore in states)  # walking out under the camera
    assert all(ignore == (visible < 0.5) for visible, ignore in states if ignore or visible < 0.5)


def test_a_person_hidden_behind_another_is_not_counted() -> None:
    scenario = load_scenario("two-angles")
    stage = Stage.from_spec(scenario.cameras[0], 0, 10.0)
    look = random_appearance(np.random.default_rng(0), "red")
    # both on the camera's line of sight (it looks along the room's diagonal), one 1.5 m behind
    near = Actor("near", look, "red", 1.75, 2.5, 2.5, "standing", 0.0, None, (-0.7, -0.7))
    far = Actor("far", look, "blue", 1.7, 3.6, 3.6, "standing", 0.0, None, (-0.7, -0.7))
    _, people, _ = stage.render([far, near], 1.0, np.random.default_rng(0))
    shown = {p.id: p for p in people}
    assert shown["near"].visible == 1.0
    assert not shown["near"].ignore
    assert shown["far"].visible < 0.5
    assert shown["far"].ignore
    _, alone, _ = stage.render([far], 1.0, np.random.default_rng(0))
    assert alone[0].visible == 1.0  # the same person, nobody in front


def test_keyframes_carry_the_true_caption() -> None:
    scenario = load_scenario("shop-knife")
    renderer = Renderer(scenario, 0, seed=0)
    captioned = [renderer.frame(i).truth for i in range(0, scenario.frames, 20)]  # every 2 s at 10 fps
    assert all(t.caption is not None for t in captioned)
    assert renderer.frame(10).truth.caption is None
    said = [t.caption for t in captioned]
    assert "nobody is in the shop" in said
    assert "a person in a blue shirt is holding a knife in the shop" in said


def seen(action: str, held: str | None = None, shirt: str = "red") -> captions.Seen:
    return captions.Seen(action, held, shirt)


@pytest.mark.parametrize(
    ("people", "place", "colour", "text"),
    [
        ([], "entrance", True, "nobody is at the entrance"),
        ([seen("walking", "knife", "blue")], "shop", True, "a person in a blue shirt is holding a knife in the shop"),
        ([seen("standing")], "corridor", False, "a person is standing in the corridor"),
        ([seen("fighting"), seen("fighting", shirt="blue")], "room", True, "two people are fighting in the room"),
        ([seen("walking"), seen("lying")], "room", True, "two people are in the room and one is lying on the floor"),
        (
            [seen("walking"), seen("walking", "bag"), seen("walking")],
            "corridor",
            True,
            "three people are walking in the corridor",
        ),
        (
            [seen("fighting"), seen("fighting"), seen("standing", "knife")],
            "shop",
            True,
            "three people are in the shop and one is holding a knife",
        ),
        ([seen("walking")] * 5, "shop", True, "a group of people are walking in the shop"),
        ([seen("walking"), seen("standing")], "room", True, "two people are in the room"),
    ],
)
def test_caption_grammar(people: list[captions.Seen], place: str, colour: bool, text: str) -> None:
    assert captions.caption(people, place, colour) == text
    facts = captions.parse(text)
    assert facts is not None
    assert facts.place == place
    assert (facts.held == "knife") == any(p.held == "knife" for p in people)
    assert (facts.colour != "none") == (colour and len(people) == 1)


def test_captions_outside_the_grammar_do_not_parse() -> None:
    assert captions.parse("a dog is barking in the room") is None
    assert captions.parse("nobody is in the kitchen") is None
    assert captions.parse("a person is dancing in the room") == captions.Facts("1", "unknown", "none", "none", "room")


def _scenario(**change: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "duration": 5,
        "places": {"hall": {"kind": "corridor", "x": [-1, 1], "z": [0, 10]}},
        "cameras": [{"place": "hall", "at": [0, 0]}],
        "people": [{"id": "p", "shirt": "red", "script": [{"enter": [0, 5]}, {"walk": [[0, 2]]}]}],
    }
    data.update(change)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"duration": -1}, r"test: duration: expected a number from 1 to"),
        (
            {"places": {"hall": {"kind": "kitchen", "x": [-1, 1], "z": [0, 10]}}},
            r"places\.hall\.kind: expected one of corridor, shop",
        ),
        ({"cameras": [{"place": "lobby", "at": [0, 0]}]}, r"cameras\[0\]\.place: expected one of hall"),
        (
            {"cameras": [{"place": "hall", "at": [0, 0], "lighting": [["noon", 0]]}]},
            r"cameras\[0\]\.lighting: expected \[mode, second\]",
        ),
        (
            {"people": [{"id": "p", "shirt": "purple", "script": [{"enter": [0, 1]}]}]},
            r"people\[0\]\.shirt: expected one of red",
        ),
        (
            {"people": [{"id": "p", "shirt": "red", "script": [{"dance": 3}]}]},
            r"people\[0\]\.script\[0\]: expected a step",
        ),
        (
            {"people": [{"id": "p", "shirt": "red", "script": [{"hold": "sword"}]}]},
            r"script\[0\]\.hold: expected one of knife, bag, phone",
        ),
        ({"cameras": []}, r"cameras: expected a list of one or two cameras"),
    ],
)
def test_bad_scenarios_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario("test", _scenario(**change))


def test_a_script_that_walks_before_entering_is_refused() -> None:
    from appliance.sim.world import World

    scenario = parse_scenario("test", _scenario(people=[{"id": "p", "shirt": "red", "script": [{"walk": [[0, 2]]}]}]))
    with pytest.raises(ScenarioError, match=r"people\[p\]\.script\[0\]: walk before enter"):
        World(scenario, 0)


def test_an_unknown_scenario_names_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match=r"no-such: no such scenario \(shipped: corridor-walk, empty-lighting"):
        load_scenario("no-such")


def test_sim_list_and_render_from_the_command_line(tmp_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "appliance", "sim", "list"], capture_output=True, text=True, check=True
    )
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(SHIPPED)
    rendered = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "sim",
            "render",
            "two-angles",
            "--out",
            str(tmp_path),
            "--seconds",
            "6",
            "--seed",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert (truth["scenario"], truth["seed"], truth["fps"], truth["resolution"]) == ("two-angles", 2, 10.0, [640, 480])
    scenario = load_scenario("two-angles")
    for view, camera in enumerate(truth["cameras"]):
        assert len(camera["frames"]) == 60
        with av.open(str(tmp_path / camera["file"])) as video:
            stream = video.streams.video[0]
            assert stream.codec_context.name == "h264"
            decoded = [f.to_ndarray(format="bgr24") for f in video.decode(stream)]
        assert len(decoded) == 60
        expected = Renderer(scenario, view, seed=2).frame(45)
        assert cv2.PSNR(decoded[45], expected.image) > 30  # the file holds the rendered frames, in order
        assert camera["frames"][45] == json.loads(json.dumps(expected.truth.to_json()))
    assert any(f["people"] for f in truth["cameras"][0]["frames"])


def test_snapshots_cover_places_light_actions_and_objects() -> None:
    shots = list(snapshots(seed=11, count=300, stages=30))
    places = {s.truth.place for s in shots}
    lights = {s.truth.light for s in shots}
    people = [p for s in shots for p in s.truth.counted]
    assert places == {"corridor", "shop", "room", "entrance"}
    assert lights == {"day", "dusk", "night"}
    assert {p.action for p in people} == set(ACTIONS)
    assert {p.held for p in people} == {None, *OBJECTS}
    assert all((p.held_box is not None) == (p.held is not None) for p in people if p.visible > 0.9)
    assert {p.shirt for p in people} == set(SHIRT_COLOURS)
    assert sum(not s.truth.counted for s in shots) >= 20  # empty scenes are a fair share
    for shot in shots:
        facts = captions.parse(shot.truth.caption or "")
        assert facts is not None
        assert facts.place == shot.truth.place
        if shot.truth.light == "night":
            assert not re.search(r"\b(red|blue|green|yellow|white|black)\b", shot.truth.caption or "")


def test_snapshots_of_nobody_are_empty_places_in_every_light() -> None:
    shots = list(snapshots(seed=12, count=60, stages=30, nobody=True))
    assert all(s.truth.people == () for s in shots)
    assert {s.truth.place for s in shots} == {"corridor", "shop", "room", "entrance"}
    assert {s.truth.light for s in shots} == {"day", "dusk", "night"}
    again = next(iter(snapshots(seed=12, count=60, stages=30, nobody=True)))
    assert np.array_equal(again.image, shots[0].image)


def test_an_actor_outside_the_cameras_place_is_not_drawn() -> None:
    scenario = load_scenario("room-fight")
    stage = Stage.from_spec(scenario.cameras[0], 0, 10.0)
    look = random_appearance(np.random.default_rng(0), "red")
    beyond_the_wall = Actor("x", look, "red", 1.7, 9.5, 3.0, "standing", 0.0, None, (0.0, -1.0))
    _, people, _ = stage.render([beyond_the_wall], 1.0, np.random.default_rng(0))
    assert people == ()


def test_shadows_fall_on_the_floor_and_never_show_through_a_wall() -> None:
    """A patch drifting across the room and out through its side wall darkens floor pixels only;
    once past the wall it is out of sight, as the floor beyond a wall is."""
    spec = load_scenario("empty-lighting").cameras[0]
    room, camera = spec.place, spec.camera
    shadow = Shadow((room.x[0] - 3.0, room.z[1] - 1.5), (1.0, 0.0), 1.0, 0.45)
    bare = Stage(camera, room, [("day", 0.0)], 0.0, [], [], seed=0)
    shaded = Stage(camera, room, [("day", 0.0)], 0.0, [], [shadow], seed=0)
    floor = ground_mask(room, camera) > 0
    seen = 0
    for t in np.arange(0.0, room.x[1] - room.x[0] + 6.0, 0.25):
        without = bare.render([], t, np.random.default_rng(0))[0]
        with_shadow = shaded.render([], t, np.random.default_rng(0))[0]
        darker = (without.astype(int) - with_shadow.astype(int) > 8).any(axis=2)
        assert not (darker & ~floor).any(), f"at {t} s the shadow darkens pixels off the floor"
        if shadow.start[0] + shadow.velocity[0] * t > room.x[1] + shadow.radius:
            assert not darker.any(), f"at {t} s the shadow is beyond the wall, yet shows"
        seen += bool(darker.any())
    assert seen >= 8  # it does cross the floor in sight
