"""Beam search, against greedy decoding and against trying every sequence; and the search over two
readings of a frame (the frame and its mirror image)."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.inference.captioner import beam_search, log_softmax, mean_of_readings, mirrored, side_swap

START, END = 0, 1


def markov_step(table: np.ndarray):  # type: ignore[no-untyped-def]
    """A decoder whose next-token distribution depends on the previous token only; state counts steps."""

    def step(token: int, calls: int) -> tuple[np.ndarray, int]:
        return log_softmax(table[token]), calls + 1

    return step


def tables(vocabulary: int) -> st.SearchStrategy[np.ndarray]:
    return st.integers(0, 2**32 - 1).map(
        lambda seed: np.random.default_rng(seed).normal(0, 2, (vocabulary, vocabulary)).astype(np.float32)
    )


def sequence_logprob(table: np.ndarray, tokens: tuple[int, ...]) -> float:
    previous, total = START, 0.0
    for token in tokens:
        total += float(log_softmax(table[previous])[token])
        previous = token
    return total


@settings(max_examples=200, deadline=None)
@given(table=tables(6), max_length=st.integers(1, 8))
def test_width_one_is_greedy_decoding(table: np.ndarray, max_length: int) -> None:
    expected, token = [], START
    for _ in range(max_length):
        token = int(np.argmax(table[token]))
        expected.append(token)
        if token == END:
            break
    tokens, logprob = beam_search(markov_step(table), 0, START, END, max_length, 1, 0.7)
    assert tokens == tuple(expected)
    assert math.isclose(logprob, sequence_logprob(table, tokens), rel_tol=1e-5, abs_tol=1e-5)


@settings(max_examples=100, deadline=None)
@given(table=tables(4), max_length=st.integers(1, 4), penalty=st.sampled_from([0.0, 0.7, 1.0, 2.0]))
def test_a_beam_wide_enough_finds_the_best_sequence_of_all(table: np.ndarray, max_length: int, penalty: float) -> None:
    # Every sequence: those that end with END early, and those cut at max_length.
    candidates = []
    for length in range(1, max_length + 1):
        for body in itertools.product(range(4), repeat=length - 1):
            if END in body:
                continue
            candidates.append((*body, END))
            if length == max_length:
                candidates += [(*body, last) for last in range(4) if last != END]
    best = max(candidates, key=lambda seq: sequence_logprob(table, seq) / len(seq) ** penalty)
    tokens, _ = beam_search(markov_step(table), 0, START, END, max_length, 4**max_length, penalty)
    best_score = sequence_logprob(table, best) / len(best) ** penalty
    assert math.isclose(
        sequence_logprob(table, tokens) / len(tokens) ** penalty, best_score, rel_tol=1e-5, abs_tol=1e-5
    )


def test_search_stops_at_the_end_token_and_at_max_length() -> None:
    table = np.full((4, 4), -10.0, np.float32)
    table[START, 2] = table[2, 3] = table[3, END] = 10.0  # start -> 2 -> 3 -> end
    calls = []

    def step(token: int, state: int) -> tuple[np.ndarray, int]:
        calls.append(token)
        return log_softmax(table[token]), state

    assert beam_search(step, 0, START, END, 10, 3, 0.7)[0] == (2, 3, END)
    # One step from the start; its three best continuations are 2, END and one unlikely token,
    # so two beams live on for two steps. Then "2 3 END" is finished with log-probability ~0,
    # which no unlikely beam can beat: the search ends instead of running to max_length.
    assert len(calls) == 1 + 2 + 2
    calls.clear()
    assert beam_search(step, 0, START, END, 2, 1, 0.7)[0] == (2, 3)
    assert len(calls) == 2


@settings(max_examples=50, deadline=None)
@given(table=tables(6), max_length=st.integers(1, 6), width=st.integers(1, 4))
def test_one_reading_searches_exactly_as_its_own_step(table: np.ndarray, max_length: int, width: int) -> None:
    alone = beam_search(markov_step(table), 0, START, END, max_length, width, 0.7)
    one: tuple[int, ...] = (0,)
    assert beam_search(mean_of_readings([markov_step(table)]), one, START, END, max_length, width, 0.7) == alone


@settings(max_examples=100, deadline=None)
@given(first=tables(5), second=tables(5), token=st.integers(0, 4))
def test_two_readings_give_the_mean_of_their_probabilities_and_keep_their_own_states(
    first: np.ndarray, second: np.ndarray, token: int
) -> None:
    logprobs, states = mean_of_readings([markov_step(first), markov_step(second)])(token, (3, 7))
    expected = (np.exp(log_softmax(first[token])) + np.exp(log_softmax(second[token]))) / 2
    np.testing.assert_allclose(np.exp(logprobs), expected, rtol=1e-5, atol=1e-7)
    assert states == (4, 8)


def test_the_readings_agree_on_the_word_neither_is_sure_of() -> None:
    # Words: start, end, "walking", "standing". One reading leans to walking, the other is sure of
    # standing: alone, each says its own; together, the mean of the probabilities says standing.
    first = np.log(np.array([[1e-6, 1e-6, 0.6, 0.4], [1e-6, 1.0, 1e-6, 1e-6]] * 2, np.float32))
    second = np.log(np.array([[1e-6, 1e-6, 0.1, 0.9], [1e-6, 1.0, 1e-6, 1e-6]] * 2, np.float32))
    first[2:] = first[1]
    second[2:] = second[1]
    assert beam_search(markov_step(first), 0, START, END, 4, 3, 0.7)[0] == (2, END)
    both = mean_of_readings([markov_step(first), markov_step(second)])
    assert beam_search(both, (0, 0), START, END, 4, 3, 0.7)[0] == (3, END)


def test_a_mirrored_reading_speaks_of_the_frame_s_left_and_right() -> None:
    vocabulary = ["<start>", "<end>", "left", "a", "right", "door"]
    swap = side_swap(vocabulary)
    assert swap.tolist() == [0, 1, 4, 3, 2, 5]
    assert side_swap(["<start>", "<end>", "left", "door"]).tolist() == [0, 1, 2, 3]  # no "right" to trade with
    fed = []

    def reading_of_the_mirror_image(token: int, state: int) -> tuple[np.ndarray, int]:
        fed.append(token)  # it sees a door on its left: the frame's right
        return log_softmax(np.array([-9, -9, 5, -9, -9, -9], np.float32)), state

    logprobs, _ = mirrored(reading_of_the_mirror_image, swap)(4, 0)
    assert fed == [2]  # the frame's "right" is the mirror image's "left"
    assert int(np.argmax(logprobs)) == vocabulary.index("right")
    twice = mirrored(mirrored(reading_of_the_mirror_image, swap), swap)(4, 0)[0]
    np.testing.assert_array_equal(twice, reading_of_the_mirror_image(4, 0)[0])
