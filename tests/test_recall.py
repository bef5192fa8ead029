"""The recall benchmark: its scorer, its plan of nights, and a run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.errors import AssistantError
from assistant.recall.benchmark import (
    RecallSettings,
    is_abstention,
    is_correct,
    mentions,
    normalise,
    plan,
    reply_kind,
)
from assistant.recall.facts import SLOTS, with_value

METRICS = (
    "recall_in_context",
    "recall_closed_book_before",
    "recall_closed_book_after",
    "update_accuracy",
    "update_accuracy_in_context",
    "abstain_rate_unknown",
    "abstain_rate_unknown_after",
    "drift",
)


def test_normalise_touches_only_case_and_punctuation():
    assert normalise("  Your dentist appointment is on Monday at 4:30 PM! ") == (
        "your dentist appointment is on monday at 430 pm"
    )


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        pytest.param("Tobias", True, id="bare-right-value"),
        pytest.param("Your brother is called Tobias.", True, id="inside-a-sentence"),
        pytest.param("your brother is called TOBIAS", True, id="case-differs"),
        pytest.param("Your brother is called Silas.", False, id="wrong-value"),
        pytest.param("Your brother is called Tobiasz.", False, id="longer-word"),
        pytest.param("You haven't told me your brother's name.", False, id="dont-know"),
        pytest.param("Tobias or Silas, I think.", False, id="lists-another-told-value"),
    ],
)
def test_is_correct_on_hand_written_answers(answer, ok):
    assert is_correct(answer, "Tobias", wrong=("Silas", "Tobias")) is ok


def test_multi_word_values_must_appear_whole():
    assert is_correct("It is on Monday at 4:30 pm.", "Monday at 4:30 pm")
    assert not is_correct("It is on Monday at 5:30 pm.", "Monday at 4:30 pm")
    assert not mentions("dark blue", "blue green")


@pytest.mark.parametrize(
    ("answer", "abstains"),
    [
        ("You haven't told me your sister's name.", True),
        ("I don't know.", True),
        ("I do not know that.", True),
        ("Your sister is called Anika.", False),
    ],
)
def test_is_abstention(answer, abstains):
    assert is_abstention(answer) is abstains


@pytest.mark.parametrize(
    ("asked", "reply", "kind"),
    [
        ("Who did I say my cousin is?", "Your cousin is called Tobias.", "answer"),
        ("Any idea what my aunt's name is?", "You haven't told me your aunt's name.", "dont_know"),
        ("My cousin goes by Tobias.", "Got it. Your cousin is called Tobias.", "acknowledgement"),
        (
            "Correction, my car is red.",
            "Thanks for the update. You drive a red car.",
            "acknowledgement",
        ),
        (
            "Write some questions about the following note:\nMy cousin goes by Tobias.",
            "What is my cousin's name?\nWho is my cousin?",
            "note_task",
        ),
        ("Remind me of everything I said today.", "Today you told me: ...", "note_task"),
        ("Morning!", "Good morning! What can I do for you today?", "small_talk"),
    ],
)
def test_drift_turns_are_told_apart_by_what_they_do(asked, reply, kind):
    assert reply_kind(asked, reply) == kind


def test_plan_is_deterministic_and_honest():
    settings = RecallSettings(seed=3, nights=2, facts_per_night=12, updates_per_night=2)
    nights = plan(settings)
    assert [[f.value for f in n.facts] for n in nights] == [
        [f.value for f in n.facts] for n in plan(settings)
    ]
    told = [f.slot.key for n in nights for f in n.facts]
    assert len(told) == len(set(told)) == 24  # each fact told once, for the first time
    assert not {s.key for s in nights[0].unknown} & set(told)  # never told at all
    first = {f.slot.key: f.value for f in nights[0].facts}
    for update in nights[1].updates:  # later nights change earlier facts
        assert update.slot.key in first and update.value != first[update.slot.key]
    for night in nights:
        said = [text for turns in night.conversations for text in turns]
        assert len(said) > len(night.facts) + len(night.updates)  # small talk among them
        assert set(night.wordings) == set(night.facts + night.updates)
    wordings = [w for night in nights for w in night.wordings.values()]
    assert {"own_wording", "shared_frame"} == set(wordings)


def test_a_statement_is_told_apart_as_a_shared_frame_or_the_slots_own_wording():
    cousin = next(slot for slot in SLOTS if slot.key == "family.cousin")
    said = {
        "Let me tell you that my cousin's name is Juno.": "shared_frame",
        "Something you might want to know: my cousin's name is Juno.": "shared_frame",
        "My cousin goes by Juno.": "own_wording",
    }
    assert {with_value(t, "Juno") for t in cousin.held_out.statements} == set(said)
    for text, wording in said.items():
        assert cousin.wording(text, "Juno") == wording


# Prints the order of every question a 2-night benchmark asks (metric, slot).
_QUESTION_ORDER = """
from assistant.recall.benchmark import RecallSettings, night_questions, plan
nights = plan(RecallSettings(nights=2, facts_per_night=8, updates_per_night=3))
told = [f for n in nights for f in n.facts + n.updates]
current, earlier = {}, []
for night in nights:
    current.update({f.slot.key: f for f in night.facts + night.updates})
    asked = night_questions(night, current, earlier, told)
    for probes in (asked.in_context, asked.before, asked.after):
        print([(metric, getattr(t, "slot", t).key) for metric, t, _ in probes])
    earlier += night.facts + night.updates
"""


def test_the_questions_asked_do_not_depend_on_the_python_process():
    # Each question's wording is drawn when it is first asked, so the order must be fixed
    # for a seed to reproduce a run (string hashing differs from one process to the next).
    orders = {
        subprocess.run(
            [sys.executable, "-c", _QUESTION_ORDER],
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in range(1, 5)
    }
    assert len(orders) == 1


def test_plan_refuses_more_facts_than_the_corpus_has():
    with pytest.raises(AssistantError, match="facts to tell") as raised:
        plan(RecallSettings(nights=10, facts_per_night=20))
    assert "--nights" in raised.value.hint


@pytest.mark.slow
def test_benchmark_runs_end_to_end_without_consolidation(home, tiny_llama):
    result = CliRunner().invoke(
        cli,
        ["bench", "recall", "--model", str(tiny_llama), "--nights", "2", "--facts-per-night", "6"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["consolidation"] == "none"
    assert set(METRICS) <= set(report["overall"])
    first, second = report["nights"]
    assert set(METRICS) <= set(first) and "retention" in second
    # Each fact metric is split by how the fact was said, and the split adds up.
    split = report["overall"]["by_wording"]["recall_in_context"]
    assert set(split) <= {"own_wording", "shared_frame"}
    assert min(split.values()) <= report["overall"]["recall_in_context"] <= max(split.values())
    # No consolidation: nothing changed the model, whatever kind of turn is scored.
    assert first["drift_by_kind"] and set(first["drift_by_kind"].values()) == {1.0}
    told = first["stages"]["tell"]["turns"]
    assert told == 6 + 2 + 2  # facts, small talk (one per conversation), updates
    consolidation = first["consolidation"]
    assert consolidation["learned"] is False and consolidation["raw_turns_left"] == 0
    assert told <= consolidation["deleted_turns"] <= 2 * told  # each turn and its reply
    for stage in ("tell", "ask_in_context", "ask_closed_book_before", "ask_closed_book_after"):
        assert first["stages"][stage]["prompt_tokens"] > 0
        assert first["stages"][stage]["turns"] > 0
