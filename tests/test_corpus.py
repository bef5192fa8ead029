"""The synthetic corpus: deterministic, rich enough, and its held-out side never leaks."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from assistant.prompting import NOTES_HEADER, SYSTEM_PROMPT
from assistant.recall.corpus import (
    IGNORE,
    Fact,
    encode_transcript,
    questions_about,
    render_message,
    statement,
    transcripts,
)
from assistant.recall.facts import (
    CLOSERS,
    FILLER_WORDS,
    KINDS,
    LINKS,
    OPENERS,
    POOLS,
    SLOTS,
    SPLITS,
    draw_value,
    split_of_value,
    with_value,
)

TRAINING_SAMPLE = 1500


@pytest.fixture(scope="module")
def training_text() -> str:
    """A large sample of the training split, as one lower-cased text."""
    stream = transcripts(seed=7)
    sample = itertools.islice(stream, TRAINING_SAMPLE)
    return "\n".join(m["content"] for t in sample for m in t).lower()


def test_same_seed_same_corpus_other_seed_other_corpus():
    first = list(itertools.islice(transcripts(3), 20))
    assert first == list(itertools.islice(transcripts(3), 20))
    assert first != list(itertools.islice(transcripts(4), 20))


def test_covers_many_kinds_of_facts_each_with_many_phrasings():
    assert len(KINDS) >= 15
    for slot in SLOTS:
        assert len(slot.train.statements) >= 3, slot.key
        assert len(slot.train.questions) >= 3, slot.key
        assert slot.held_out.statements and slot.held_out.questions, slot.key
        assert bool(slot.held_out.updates) == slot.can_change, slot.key


def test_values_come_from_large_pools_on_both_sides():
    rng = random.Random(0)
    for pool in POOLS:
        for split in SPLITS:
            values = {draw_value(pool, rng, split) for _ in range(200)}
            assert len(values) >= 8, (pool, split)
            assert all(split_of_value(v, pool) == split for v in values)


def _phrasing_pattern(template: str) -> re.Pattern:
    """A template as a regex: its literal words, any value where the value goes."""
    parts = re.split(r"\{[va]\}", template.lower())
    return re.compile(".+?".join(re.escape(part) for part in parts))


def test_held_out_phrasings_never_occur_in_training(training_text):
    train_templates = {
        t
        for slot in SLOTS
        for t in slot.train.statements + slot.train.questions + slot.train.updates
    }
    for slot in SLOTS:
        held = slot.held_out.statements + slot.held_out.questions + slot.held_out.updates
        for template in held:
            assert template not in train_templates
            assert not _phrasing_pattern(template).search(training_text), template


def test_held_out_values_never_occur_in_training(training_text):
    rng = random.Random(1)
    drawn = {draw_value(pool, rng, "held_out").lower(): pool for pool in POOLS for _ in range(60)}
    # One pass over the text for all of them (a pass per value took 27 s).
    any_value = re.compile(rf"\b(?:{'|'.join(map(re.escape, drawn))})\b")
    found = {match.group(0) for match in any_value.finditer(training_text)}
    assert not found, [(drawn[value], value) for value in found]


def test_training_statements_vary_the_words_around_a_fact_and_held_out_ones_do_not():
    rng = random.Random(2)
    dog = next(slot for slot in SLOTS if slot.key == "pet.dog")
    fact = Fact(dog, "Biscuit")
    said = {statement(fact, rng, "train") for _ in range(400)}
    assert any(s.startswith(tuple(OPENERS)) for s in said)
    assert any(s.endswith(tuple(CLOSERS)) for s in said)
    assert any(f"My dog {link} Biscuit." in said for link in LINKS)
    assert any(word in s.split() for s in said for word in FILLER_WORDS)
    assert not any(re.search(r"\bmy (?!dog)\S+ dog\b", s.lower()) for s in said), "split subject"
    held = {statement(fact, rng, "held_out") for _ in range(50)}
    assert held == {with_value(t, "Biscuit") for t in dog.held_out.statements}


def test_filler_words_occur_in_no_held_out_phrasing():
    held_out_words = {
        word
        for slot in SLOTS
        for template in slot.held_out.statements + slot.held_out.questions + slot.held_out.updates
        for word in re.findall(r"[a-z'-]+", template.lower())
    }
    assert not held_out_words & set(FILLER_WORDS)


def test_questions_about_a_note_are_at_least_three_distinct_in_a_fixed_order():
    rng = random.Random(3)
    for count in (1, 2, 3):
        for split in SPLITS:
            facts = [Fact(slot, "x") for slot in rng.sample(SLOTS, count)]
            asked = questions_about(facts, split)
            assert len(asked) >= 3 and len(set(asked)) == len(asked)
            assert asked == questions_about(facts, split)
            assert set(asked) <= {q for f in facts for q in f.slot.phrasings(split).questions}


def test_transcripts_use_the_product_prompt_layout():
    rng_transcripts = list(itertools.islice(transcripts(11), 200))
    with_notes = [t for t in rng_transcripts if t[1]["content"].startswith(NOTES_HEADER)]
    assert 0 < len(with_notes) < len(rng_transcripts)
    for transcript in rng_transcripts:
        assert transcript[0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert not any(NOTES_HEADER in m["content"] for m in transcript[2:])
        roles = [m["role"] for m in transcript[1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
    replies = [m["content"] for t in rng_transcripts for m in t if m["role"] == "assistant"]
    assert any("haven't told me" in r for r in replies)
    assert any(r.startswith("1. ") for r in replies)  # questions about a note
    assert any(r.startswith("- The user") for r in replies)  # restatements


def test_labels_cover_exactly_the_assistant_replies():
    # One "token" per character keeps the arithmetic visible.
    transcript = next(transcripts(5))
    ids, labels = encode_transcript(lambda text: list(range(len(text))), transcript)
    assert len(ids) == len(labels) == sum(len(render_message(m)) for m in transcript)
    supervised = sum(label != IGNORE for label in labels)
    replies = [m["content"] for m in transcript if m["role"] == "assistant"]
    assert supervised == sum(len(r + "<|im_end|>") for r in replies)


def test_a_long_transcript_is_cut_after_its_last_whole_exchange():
    def by_character(text: str) -> list[int]:
        return list(range(len(text)))

    transcript = next(t for t in transcripts(6) if len(t) >= 5)
    ids, labels = encode_transcript(by_character, transcript)
    exchange_ends = [
        sum(len(render_message(m)) for m in transcript[: i + 1])
        for i, m in enumerate(transcript)
        if m["role"] == "assistant"
    ]
    # A limit just short of the second exchange's end keeps the first exchange only.
    cut = encode_transcript(by_character, transcript, max_tokens=exchange_ends[1] - 1)
    assert cut == (ids[: exchange_ends[0]], labels[: exchange_ends[0]])
    assert encode_transcript(by_character, transcript, max_tokens=len(ids)) == (ids, labels)
    assert encode_transcript(by_character, transcript, max_tokens=exchange_ends[0] - 1) is None
