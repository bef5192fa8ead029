"""A real night on the starter, through the CLI, with the real gates: it remembers what it was
told, says it was not told the rest, keeps its world knowledge, and the newest fact wins.

Facts, values and phrasings come from the recall corpus's held-out side (what the user
says and what they later ask are worded differently); each question is asked in a fresh
conversation after the night, when the learned notes are gone, so the answer is closed-book
but for the few notes the night did not learn (carried, chat reads them as a user would get).
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.recall.benchmark import is_correct, mentions
from assistant.recall.corpus import Fact, new_fact, question, statement
from assistant.recall.facts import SLOTS
from assistant.recall.world import WORLD_QUESTIONS
from tests import nights
from tests.conftest import MLX_NIGHTS

pytestmark = pytest.mark.slow
SPLIT = "held_out"
# Measured on the starter (issue 33's notes, bench/night.py, real gates): a 10-fact night
# commits 4-7 of its 10 notes, the rest carried to the next night, so this test fails at its
# 0.8 share. Strict: the day it passes, this mark must go.
NOT_YET = pytest.mark.xfail(
    strict=True, reason="a night on the starter does not yet commit 8 of 10 notes"
)
# While it fails, its nights are the smallest plan that still meets every gate: 60 steps, the
# learning rate decaying to zero over them, checked every 20. Measured on the starter, held-out
# recall peaks by step 40-60 and 300 steps add nothing (issue 33: best 0.67 at step 40 of 300),
# so the failing night ends at its first gate in minutes, not at its 15-minute budget. The day
# this test passes, the night runs with the product's settings.
FAILING_NIGHT = {"sleep_steps": 60, "sleep_evaluate_every": 20}


def _chat(message: str) -> str:
    result = CliRunner().invoke(cli, ["chat", "--once", message])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def _sleep(backend: str) -> dict:
    # The goal for a night: within 15 minutes on two cores.
    result = CliRunner().invoke(
        cli, ["sleep", "--now", "--json", "--budget-minutes", "15", "--backend", backend]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _rows(home: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(home / "data" / "assistant.db") as conn:
        return conn.execute(sql).fetchall()


def _recalled(facts: list[Fact], told: list[Fact], rng: random.Random) -> list[bool]:
    """Each fact asked once, closed book, in a held-out phrasing; naming another value the
    user gave for a like slot is wrong."""
    return [
        is_correct(
            _chat(question(fact.slot, rng, SPLIT)),
            fact.value,
            tuple(t.value for t in told if t.slot.pool == fact.slot.pool),
        )
        for fact in facts
    ]


@pytest.mark.usefixtures("starter_training_copy")
@NOT_YET
@pytest.mark.parametrize("backend", ["torch", pytest.param("mlx", marks=MLX_NIGHTS)])
def test_a_night_teaches_what_was_told_and_only_that(home: Path, backend: str) -> None:
    rng = random.Random(11)
    slots = list(SLOTS)
    rng.shuffle(slots)
    nights.configure(home, FAILING_NIGHT)
    known = (q for q in WORLD_QUESTIONS if any(mentions(_chat(q.question), a) for a in q.answers))
    world = list(itertools.islice(known, 5))
    assert len(world) == 5  # the base model knows these

    first = [new_fact(slot, rng, SPLIT) for slot in slots[:10]]
    for fact in first:
        _chat(statement(fact, rng, SPLIT))
    report = _sleep(backend)
    assert report["outcome"] == "consolidated", report["reason"]
    assert report["notes_committed"] >= 0.8
    # The learned notes' rows are gone, and the day's epochs with their wrapped keys; only the
    # statements of the notes not yet learned wait, sealed anew in the open epoch.
    assert _rows(home, "SELECT id FROM turns") == [(i,) for i in report["carried"]]
    assert _rows(home, "SELECT count(*) FROM epochs WHERE sealed_at IS NOT NULL") == [(0,)]

    assert sum(_recalled(first, first, rng)) >= 8
    values = [fact.value for fact in first]
    for slot in slots[10:15]:  # never told
        answer = _chat(question(slot, rng, SPLIT))
        assert not any(mentions(answer, value) for value in values), answer
    for item in world:
        assert any(mentions(_chat(item.question), a) for a in item.answers), item.question

    # The second night: five new facts and one changed; the newest value wins.
    old = next(fact for fact in first if fact.slot.can_change)
    changed = new_fact(old.slot, rng, SPLIT, old)
    second = [new_fact(slot, rng, SPLIT) for slot in slots[15:20]]
    for fact in second:
        _chat(statement(fact, rng, SPLIT))
    _chat(statement(changed, rng, SPLIT, update=True))
    report = _sleep(backend)
    assert report["outcome"] == "consolidated", report["reason"]
    told = [*first, *second, changed]
    now = [changed if fact is old else fact for fact in first]
    assert _recalled([changed], told, rng) == [True]  # naming the old value is wrong
    assert sum(_recalled(now, told, rng)) >= 9
