"""`assistant sleep`: probes and checks, the commit-then-shred order, crash safety, the lock.

The pieces are checked on hand-made text; the runner on short nights of the
starter model (and of the tiny random Llama where a model that cannot read is
the point). Whether a night really teaches is tests/test_sleep_quality.py's.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.sleep import lessons, triage
from assistant.sleep.probes import (
    ABSTAIN,
    Probe,
    first_person_questions,
    hold_out,
    near_misses,
    negative_questions,
    parse_questions,
    related,
    reverse_questions,
    subject_questions,
    subjects,
    value_words,
)
from assistant.sleep.verify import Checks, Thresholds, check, judge
from assistant.store.memory import Turn
from tests import nights
from tests.conftest import plaintext_expert_files


def _turn(i: int, role: str, text: str) -> Turn:
    return Turn(i, 1, 1, role, text, "")


def test_day_notes_keep_the_latest_position_of_a_repeat() -> None:
    turns = [
        _turn(1, "user", "I live in Oslo."),
        _turn(2, "assistant", "Got it."),
        _turn(3, "user", "I moved to Lima."),
        _turn(4, "user", " I live in Oslo. "),
    ]
    assert triage.day_notes(turns) == {"I moved to Lima.": [3], "I live in Oslo.": [1, 4]}


def test_a_note_too_long_for_the_teacher_is_split_never_dropped() -> None:
    def fits(text: str) -> bool:
        return len(text) <= 12

    long_sentence = "alpha beta gamma delta epsilon"
    unbroken = "abcdefghijklmnopqrstuvwxyz0123"
    notes = ["short one", "One two. Three four five. Six.", long_sentence, unbroken]
    sources = triage.notes_that_fit({note: [i] for i, note in enumerate(notes)}, fits)
    pieces = list(sources)
    assert all(fits(piece) for piece in pieces)
    assert pieces[0] == "short one"
    assert sources["One two."] == [1]  # a piece keeps the turns of its note
    # Every word said is in some piece, in order; an unbroken run is cut where it must be.
    words = [piece for piece in pieces if piece not in unbroken]
    assert " ".join(words).split() == " ".join(notes[:3]).split()
    assert "".join(piece for piece in pieces if piece in unbroken) == unbroken


def test_questions_kept_are_about_the_note_and_in_the_users_voice() -> None:
    note = "Let me tell you that my sister's name is Ramona."
    written = (
        "1. What is your sister's name?\n- What's the name of the plumber's wife?\n"
        "not a question\nWho is Ramona?\nWhat is your sister's name?"
    )
    assert parse_questions(written, note) == ["What is my sister's name?", "Who is Ramona?"]
    assert reverse_questions("My all-time favourite novel is The Golden Mirror, says Ada.") == [
        "What is The Golden Mirror?",
        "Who is Ada?",
    ]


def test_a_note_is_asked_about_each_thing_of_the_users_it_speaks_of() -> None:
    assert subjects("Put my tax meeting down for Tuesday at 5:30 pm.") == ["my tax meeting"]
    assert subjects("Our goldfish answers to Muffin, and my new bike is red.") == [
        "my goldfish",
        "my new bike",
    ]
    assert subjects("Something you might want to know: my mother's name is Linnea.") == [
        "my mother's name"
    ]
    assert subjects("I need a break.") == []
    assert subjects("Correction: my yoga class is now on Wednesday.") == ["my yoga class"]
    assert subjects("My all-time favourite novel is The Golden Mirror.") == [
        "my all-time favourite novel"
    ]
    # What a user asks depends on what the note says of the thing: a time, a name, or else.
    assert "When is my tax meeting?" in subject_questions("My tax meeting is on Friday.")
    named = subject_questions("My father goes by Nesus.")
    assert "What is my father's name?" in named and "When is my father?" not in named
    assert "What is my job?" in subject_questions("My job is clinical designer.")
    assert "What do you know about my job?" in subject_questions("My job is clinical designer.")


def test_a_habit_or_taste_told_in_the_first_person_is_asked_about() -> None:
    assert first_person_questions("From now on, I'd like concise cheerful answers.") == [
        "What would I like?",
        "What would I prefer?",
        "What is my preference?",
        "What kind of answers would I like?",
        "What kind of answers would I prefer?",
    ]
    assert first_person_questions("I live in Tarvik.") == ["Where do I live?"]
    assert first_person_questions("I'm allergic to bee stings.") == ["What am I allergic to?"]
    assert first_person_questions("I support Tarvik United.") == ["Who do I support?"]
    # Moods and one-off events are not things to remember.
    assert first_person_questions("I'm feeling tired.") == []
    assert first_person_questions("I had a long day.") == []
    assert first_person_questions("I need a break.") == []


def test_near_misses_ask_of_untold_things_what_was_asked_of_told_ones() -> None:
    notes = ["My mother is called Linnea.", "My sister's birthday is on May 3."]
    asked = ["What's my mother called?", "Who is Linnea?", "When is my sister's birthday?"]
    found = near_misses(asked, notes, 100, random.Random(0))
    assert any(q.startswith("What's my ") and q.endswith(" called?") for q in found)
    assert "When is my mother's birthday?" in found and "Where does my sister live?" in found
    # Never what a note tells, nor about a told relative under another's question.
    assert "When is my sister's birthday?" not in found
    assert not any("mother called" in q or "Linnea" in q for q in found)
    assert len(near_misses(asked, notes, 2, random.Random(0))) == 2
    assert found == near_misses(asked, notes, 100, random.Random(0))


def test_the_value_is_what_the_answer_takes_from_the_note() -> None:
    note = "Correction, my yoga class is now on Wednesday at 3:30 pm."
    assert value_words(
        "Your yoga class is on Wednesday at 3:30 pm.", note, "When is my yoga class?"
    ) == ("wednesday", "3", "30", "pm")
    # An answer naming nothing from the note (or only what the question says) has no value.
    assert value_words("I'm sorry, I can't know that.", note, "When is my yoga class?") == ()
    assert value_words("Your yoga class.", note, "When is my yoga class?") == ()


def test_negatives_are_about_nothing_the_user_said() -> None:
    notes = ["My sister is called Ramona.", "I drive a green Kia."]
    negatives = negative_questions(notes, 200, random.Random(1))
    assert len(negatives) > 40
    assert not any(related(q, n) for q in negatives for n in notes)
    assert "What is my brother's name?" in negatives
    assert "What is my sister's name?" not in negatives and "What car do I drive?" not in negatives
    assert negatives == negative_questions(notes, 200, random.Random(1))


def test_each_note_holds_out_two_probes_of_different_wordings() -> None:
    frames = ("What is my {}?", "What is the {}?", "Who is {}?")
    found = [Probe(f.format(note), note, "A", ("a",)) for note in "xyz" for f in frames]
    found += [
        Probe("Only?", "w", "A", ("a",)),
        Probe("Q1?", "v", "A", ()),
        Probe("Q2?", "v", "A", ()),
    ]
    train, held_out = hold_out(found, random.Random(0))
    # Three probes: two held out; two: one; one ("w"): trained on, never checked.
    assert sorted(p.note for p in held_out) == ["v", "x", "x", "y", "y", "z", "z"]
    assert len(train) == 5 and not set(train) & set(held_out)
    for note in "xyz":
        first, second = [p.question for p in held_out if p.note == note]
        assert first.split()[:2] != second.split()[:2]


def test_verification_judges_the_value_not_the_wording() -> None:
    held_out = [
        Probe("What is my sister's name?", "n", "Your sister is Ramona.", ("ramona",)),
        Probe("When is my yoga class?", "n", "Wednesday at 3 pm", ("wednesday", "3", "pm")),
    ]
    replies = {
        "What is my sister's name?": "Ramona!",
        "When is my yoga class?": "It's on Wednesday.",  # the time is missing: wrong
        "What is my brother's name?": "Your brother is Ramona.",  # a leak
        "What is my dog called?": ABSTAIN,
    }
    checks = check(
        replies.__getitem__,
        held_out,
        ["What is my brother's name?", "What is my dog called?"],
        earlier=[],
        values={"ramona", "wednesday", "3", "pm"},
        anchor_divergence=0.01,
    )
    assert (checks.recall, checks.leak, checks.retention) == (0.5, 0.5, None)
    assert checks.passed_probes == held_out[:1]


def _checks(recall, leak=0.0, retention=None, divergence=0.0, by_note=None) -> Checks:
    by_note = {"n": [True]} if by_note is None else by_note
    return Checks(recall, leak, retention, divergence, [], by_note)


LIMITS = Thresholds(min_recall=0.8, min_retention=0.9, max_leak=0.1, max_anchor_divergence=0.1)


def test_judge_names_the_first_failed_check() -> None:
    assert judge(_checks(0.9, retention=0.95, divergence=0.05), LIMITS).passed
    assert "never told" in judge(_checks(0.9, leak=0.5), LIMITS).reason
    assert "older memories" in judge(_checks(0.9, retention=0.5), LIMITS).reason
    assert "divergence" in judge(_checks(0.9, divergence=0.5), LIMITS).reason
    assert "nothing verifiable" in judge(_checks(None), LIMITS).reason


def test_the_expert_keeps_the_notes_it_learned() -> None:
    # A note is learned when min_recall of its own held-out probes are right; one is enough.
    notes = {"a": [True, True], "b": [True, False], "c": [False, False], "d": []}
    verdict = judge(_checks(0.5, by_note=notes), LIMITS)
    assert verdict.passed and verdict.learned == ("a",)  # "d" had nothing held out: unproven
    refused = judge(_checks(0.25, by_note={"b": [True, False], "c": [False]}), LIMITS)
    assert not refused.passed and "no note was learned: closed-book recall 25%" in refused.reason
    # The global checks still judge the expert as a whole.
    assert not judge(_checks(0.5, leak=0.5, by_note=notes), LIMITS).passed
    # With no recall required (the gates open), every note trained on counts as learned.
    opened = Thresholds(0.0, 0.0, 1.0, 1e9)
    assert judge(_checks(0.5, by_note=notes), opened).learned == ("a", "b", "c", "d")


def test_a_note_the_teacher_could_ask_nothing_about_is_judged_not_learned() -> None:
    """So a committed night carries it to the next one instead of shredding it unlearned."""
    from assistant.sleep.checkpoint import NightState
    from assistant.sleep.seeding import judged_notes

    told, newer = nights.CANARIES[0], "Correction: my car is now blue."
    preference = "From now on, I'd like concise cheerful answers."
    night = NightState(
        "m",
        [],
        probes=[Probe("What colour is my car?", newer, "Blue.", ("blue",))],
        held_out=[Probe("What is my goldfish called?", told, "Zorblax-4417.", ("zorblax",))],
        unprobed=[preference],
    )
    # "My car is red.", all of whose questions the correction answered, is held by the newer.
    assert judged_notes(night) == [newer, told, preference]
    checks = check(
        lambda _: "Zorblax-4417.", night.held_out, [], [], set(), 0.0, judged_notes(night)
    )
    assert judge(checks, LIMITS).learned == (told,)


def test_a_hard_lesson_puts_all_the_probability_on_its_answer() -> None:
    lesson = lessons.hard_lesson([1, 2], [7, 8, 9], top_k=4)
    assert lesson.targets.token_ids[:, 0].tolist() == [7, 8, 9]
    probabilities = np.exp(lesson.targets.logprobs).sum(axis=1)
    assert np.allclose(probabilities, 1.0)


# -- the runner: short nights of the starter (tests/nights.py), or of the tiny random Llama ------
@pytest.mark.slow
@pytest.mark.usefixtures("starter_training_copy")
def test_sleep_commits_the_expert_then_shreds_the_logs(home: Path) -> None:
    from assistant.backends.protocol import LearnedExpert
    from assistant.backends.torch_backend import TorchBackend
    from assistant.runtime import Runtime
    from tests.test_starter import STARTER_TOLERANCE

    nights.configure(home, nights.GATES_OPEN)
    nights.tell(*nights.CANARIES)
    report = nights.sleep_now()
    assert report["outcome"] == "consolidated" and report["backend"] == "torch/cpu"
    assert report["turns"] == 4 and report["expert_id"] == 1 and report["train_steps"] == 6
    assert report["probes"] > 0 and report["held_out"] > 0 and report["anchors"] > 0
    assert nights.count(home, "turns") == 0 and nights.count(home, "epochs") == 0
    assert nights.files_mentioning(home, ("Zorblax", "Quixotic")) == []

    runtime = Runtime()
    model = runtime.require_model()
    (expert,) = runtime.experts.active(model.name)
    adapter = runtime.experts.open(runtime.memory, expert).adapter()
    # The expert is memory too: sealed, it leaves no plaintext adapter anywhere.
    assert plaintext_expert_files(home, list(adapter.tensors().values())) == []
    tokens = [1, 504, 3458, 314, 2114, 30, 2]
    reference = TorchBackend(model.hf_dir, [LearnedExpert(adapter)]).last_logits(
        tokens, student=False
    )
    engine = runtime.load_engine()
    served = engine.last_logits(tokens)
    engine.close()
    runtime.database.close()
    assert np.abs(served - reference).max() / np.abs(reference).max() < STARTER_TOLERANCE

    status = CliRunner().invoke(cli, ["sleep", "status", "--json"])
    assert json.loads(status.stdout)["last"]["outcome"] == "consolidated"
    # The next night checks this expert's kept probes (those it answered right; a night this
    # short may keep none, and then there is no retention to measure).
    from assistant.runtime import Runtime
    from assistant.sleep.wake import earlier_probes

    runtime = Runtime()
    kept = earlier_probes(runtime, runtime.experts.active(runtime.require_model().name))
    runtime.database.close()
    assert all(probe.note == "" and probe.values for probe in kept)
    nights.tell("My bicycle is called Zephyrine.")
    second = nights.sleep_now()
    assert second["outcome"] == "consolidated"
    assert (second["retention"] is None) == (not kept)


@pytest.mark.slow
def test_a_day_of_small_talk_commits_nothing_and_shreds_its_logs(home: Path) -> None:
    nights.tell("Hello!", "Thanks, that helps.", "What is the capital of France?")
    report = nights.sleep_now()
    assert report["outcome"] == "nothing new" and report["expert_id"] is None
    assert nights.count(home, "turns") == 0 and nights.count(home, "experts") == 0
    status = CliRunner().invoke(cli, ["sleep", "status"])
    assert "nothing that needed learning" in status.stdout


@pytest.mark.slow
def test_notes_the_model_cannot_answer_from_are_kept_for_another_night(
    model_home: Path,
) -> None:
    # The tiny random model answers noise: no question about the notes gets an answer
    # that names anything from them, so there is nothing to learn or check.
    nights.configure(model_home, nights.SHORT_NIGHT)
    nights.tell(*nights.CANARIES)
    report = nights.sleep_now()
    assert report["outcome"] == "kept" and report["train_steps"] == 0
    assert "no question about your messages" in report["reason"]
    assert nights.count(model_home, "turns") == 4 and nights.count(model_home, "experts") == 0
    assert list((model_home / "data" / "experts").iterdir()) == []
    status = CliRunner().invoke(cli, ["sleep", "status"])
    assert "kept your 4 messages" in status.stdout and "Messages waiting" in status.stdout


def test_a_night_out_of_budget_pauses_and_keeps_every_turn(model_home: Path) -> None:
    nights.configure(model_home, nights.SHORT_NIGHT)
    nights.tell(*nights.CANARIES)
    report = nights.sleep_now("--budget-minutes", "0")
    assert (report["outcome"], report["reason"]) == ("interrupted", "its time budget ran out")
    assert nights.count(model_home, "turns") == 4 and nights.count(model_home, "experts") == 0


def _sleep_process(home: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    from assistant.faults import CRASH_ENV

    env = {**os.environ, "ASSISTANT_HOME": str(home)}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "assistant", "sleep", "--now", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_second_sleep_refuses_while_one_runs(model_home: Path) -> None:
    from assistant.store.lock import SLEEP, WriterLock

    with WriterLock(model_home / "data" / "sleep.lock", SLEEP):
        result = _sleep_process(model_home)
    assert result.returncode == 1
    assert "Another sleep is already running" in result.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("starter_training_copy")
@pytest.mark.parametrize("point", [None, "probes", "verified", "carrying", "shredding"])
def test_a_killed_night_loses_nothing_and_a_note_not_learned_waits_encrypted(
    home: Path, point: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed before the commit (writing probes, verified), inside the carry's transaction,
    or between the two epochs' deletions, the next run finishes the night: one expert, the
    learned note's turns gone, the note not learned carried once into the open epoch, where
    chat reads it, and no plaintext anywhere. The night after learns it."""
    from assistant.chat import ChatSession
    from assistant.faults import UNLEARNABLE_ENV
    from assistant.runtime import Runtime

    nights.configure(home, nights.GATES_OPEN)
    nights.tell(nights.CANARIES[0])
    Runtime().memory.seal_epoch()  # two epochs: a kill can land between their deletions
    nights.tell(nights.CANARIES[1])
    monkeypatch.setenv(UNLEARNABLE_ENV, "Quixotic")  # the second note is never learned

    if point:
        killed = _sleep_process(home, crash_at=point)
        assert killed.returncode == -9, killed.stderr
        assert nights.count(home, "experts") == (1 if point in ("carrying", "shredding") else 0)
        # Nothing is deleted before the commit, nor by a carry killed in its transaction.
        assert nights.count(home, "turns") == (2 if point == "shredding" else 4)
    finished = _sleep_process(home)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["outcome"] == "consolidated" and report["expert_id"] == 1
    assert (report["notes_learned"], report["notes_waiting"]) == (1, 1)
    with nights.db(home) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        experts = [Path(row[0]).name for row in conn.execute("SELECT directory FROM experts")]
        stages = {row[0] for row in conn.execute("SELECT stage FROM sleeps")}
    assert len(experts) == 1 and stages == {"done"}
    assert sorted(p.name for p in (home / "data" / "experts").iterdir()) == experts

    # Only the unlearned statement is left, once, sealed anew in the open epoch.
    runtime = Runtime()
    (waiting,) = runtime.memory.unconsolidated()
    assert (waiting.text, waiting.role, waiting.tries) == (nights.CANARIES[1], "user", 1)
    assert runtime.memory.sealed_epochs() == [] and runtime.memory.epochs() == [waiting.epoch_id]
    assert report["carried"] == [waiting.id]
    assert nights.files_mentioning(home, ("Zorblax", "Quixotic")) == []
    engine = runtime.load_engine()
    chat = ChatSession(runtime.memory, engine)  # chat still reads it
    assert chat.notes == [nights.CANARIES[1]]
    assert nights.CANARIES[1] in chat.prompt("Where do I live?")[0].messages[-1]["content"]
    engine.close()
    runtime.database.close()
    status = CliRunner().invoke(cli, ["sleep", "status"])
    assert "learned 1 of 2 things" in status.stdout and "Still learning 1" in status.stdout
    if point is None:  # the next night learns it and shreds it
        monkeypatch.delenv(UNLEARNABLE_ENV)
        again = nights.sleep_now()
        assert again["outcome"] == "consolidated" and again["notes_waiting"] == 0
        assert nights.count(home, "turns") == 0 and nights.count(home, "epochs") == 0


def test_kept_probes_never_keep_the_note(runtime) -> None:
    from assistant.sleep.wake import _probe, seal_probes

    told = Probe("Who is Ramona?", nights.CANARIES[0], "Your sister.", ("sister",))
    sealed = seal_probes(runtime, "expert-probes:1", [told])
    (kept,) = json.loads(runtime.memory.unseal("expert-probes:1", sealed))
    assert _probe(kept) == Probe("Who is Ramona?", "", "Your sister.", ("sister",))
    # An expert from before values were kept: its value is what the answer adds.
    assert _probe(["What is my dog called?", "Your dog is Rex."]).values == ("rex",)
