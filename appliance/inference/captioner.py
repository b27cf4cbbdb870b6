"""The captioner slot: a sentence for a keyframe, and the beam search every family shares."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

from appliance.inference.imaging import Image
from appliance.inference.model import TFLiteModel

State = TypeVar("State")
# One decoder step: (previous token, state) -> (log-probability of each next token, new state).
Step = Callable[[int, State], tuple[npt.NDArray[np.float32], State]]


@dataclass(frozen=True)
class Caption:
    text: str
    tokens: tuple[int, ...]  # generated tokens, the end token included when it was reached
    mean_logprob: float  # mean log-probability per generated token


@dataclass(frozen=True)
class CaptionerSettings:
    beam_width: int = 3  # 1 is greedy decoding
    length_penalty: float = 0.7  # hypotheses are ranked by log-probability / length ** length_penalty
    # Also read the mirrored frame and take, word by word, the mean of the two readings' probabilities
    mirror: bool = True


# Words that trade places in a mirrored frame.
SIDES = {"left": "right", "right": "left"}


class Captioner(ABC):
    """Turns a frame into a sentence. One subclass per model family."""

    @property
    @abstractmethod
    def models(self) -> Mapping[str, TFLiteModel]:
        """The interpreters this captioner runs, by role."""

    @abstractmethod
    def caption(self, frame: Image) -> Caption:
        """A sentence describing ``frame`` (BGR)."""


def log_softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    shifted = logits - logits.max()
    result: npt.NDArray[np.float32] = shifted - np.log(np.exp(shifted).sum())
    return result


def side_swap(vocabulary: Sequence[str]) -> npt.NDArray[np.intp]:
    """For each token, the token of its mirror image: "left" and "right" swapped, any other word itself."""
    index = {word: i for i, word in enumerate(vocabulary)}
    return np.array([index.get(SIDES.get(word, word), i) for i, word in enumerate(vocabulary)], np.intp)


def mirrored(step: Step[State], swap: npt.NDArray[np.intp]) -> Step[State]:
    """The step of a reading of the mirrored frame, in the words of the frame itself: the token it is
    fed and the probabilities it returns have "left" and "right" swapped (``swap``, from ``side_swap``)."""

    def swapped(token: int, state: State) -> tuple[npt.NDArray[np.float32], State]:
        logprobs, new_state = step(int(swap[token]), state)
        return logprobs[swap], new_state

    return swapped


def mean_of_readings(steps: Sequence[Step[State]]) -> Step[tuple[State, ...]]:
    """One step over several readings of a frame (the frame and its mirror image): each keeps its own
    state, and the next word's probability is the mean of theirs (with one reading, that reading's)."""

    def step(token: int, states: tuple[State, ...]) -> tuple[npt.NDArray[np.float32], tuple[State, ...]]:
        results = [reading(token, state) for reading, state in zip(steps, states, strict=True)]
        stacked = np.stack([logprobs for logprobs, _ in results])
        mean: npt.NDArray[np.float32] = (np.logaddexp.reduce(stacked, axis=0) - np.log(len(results))).astype(np.float32)
        return mean, tuple(state for _, state in results)

    return step


@dataclass(frozen=True)
class _Hypothesis(Generic[State]):
    tokens: tuple[int, ...]
    logprob: float
    state: State

    def score(self, length_penalty: float) -> float:
        return self.logprob / math.pow(max(len(self.tokens), 1), length_penalty)


def beam_search(
    step: Step[State],
    initial: State,
    start: int,
    end: int,
    max_length: int,
    beam_width: int,
    length_penalty: float,
) -> tuple[tuple[int, ...], float]:
    """The best token sequence and its total log-probability.

    Keeps the ``beam_width`` most probable unfinished sequences at every length; a sequence that
    emits ``end`` is finished. Among finished sequences (and those cut at ``max_length``) the one
    with the best log-probability / length ** ``length_penalty`` wins. Unfinished sequences that
    can no longer beat the best finished one are dropped, so the search ends early once the
    answer is settled. Width 1 is greedy decoding.
    """
    alive = [_Hypothesis[State]((), 0.0, initial)]
    finished: list[_Hypothesis[State]] = []
    for _ in range(max_length):
        candidates: list[_Hypothesis[State]] = []
        for hypothesis in alive:
            previous = hypothesis.tokens[-1] if hypothesis.tokens else start
            logprobs, state = step(previous, hypothesis.state)
            width = min(beam_width, logprobs.size)
            for token in np.argpartition(-logprobs, width - 1)[:width]:
                candidates.append(
                    _Hypothesis((*hypothesis.tokens, int(token)), hypothesis.logprob + float(logprobs[token]), state)
                )
        candidates.sort(key=lambda h: -h.logprob)
        alive = []
        for hypothesis in candidates[:beam_width]:
            (finished if hypothesis.tokens[-1] == end else alive).append(hypothesis)
        if finished:
            # Log-probabilities only fall as a sequence grows, so the best an unfinished one can
            # still score is logprob / max_length ** penalty: drop those that cannot win.
            best_score = max(h.score(length_penalty) for h in finished)
            ceiling = math.pow(max_length, length_penalty)
            alive = [h for h in alive if h.logprob / ceiling > best_score]
        if not alive:
            break
    best = max(finished + alive, key=lambda h: h.score(length_penalty))
    return best.tokens, best.logprob
