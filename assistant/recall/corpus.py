"""Chat transcripts in the product's prompt layout, generated from a seed.

A transcript is what the chat engine would see: the system prompt, then a
conversation whose first user turn carries "today's" notes (earlier user
turns, as ``prompting`` lays them out). Every assistant turn is a training target:
answers copied from the notes or the conversation (the newest value when a fact
changed), "you haven't told me" for anything not told, acknowledgements, small
talk, and the two tasks sleep relies on (questions about a note, restatements).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from assistant.prompting import SYSTEM_PROMPT, with_notes
from assistant.prompting import note_task as note_task_text
from assistant.recall.facts import (
    ABSTAIN,
    ACKNOWLEDGE,
    ACKNOWLEDGE_UPDATE,
    ASIDES,
    CLOSERS,
    LINKS,
    NOTHING_TOLD,
    OPENERS,
    QUESTIONS_TASK,
    RECITAL_HEADER,
    RECITE_TASK,
    RESTATE_TASK,
    SLOTS,
    SMALL_TALK,
    WHEN_LINKS,
    Slot,
    Split,
    draw_value,
    filler,
    with_value,
)

Message = dict[str, str]
Tokenize = Callable[[str], list[int]]
IGNORE = -100  # label of tokens the model is not trained (or scored) on

# The most facts, and notes in all, a training transcript holds (a benchmark night is 20-30).
MAX_FACTS = 26
MAX_NOTES = 32
MOST_FACTS = (3, 6, 12, MAX_FACTS)  # upper bounds to draw from, short ones favoured
DRESSED_SHARE = 0.4  # training turns wrapped in an opener or closer
LINKED_SHARE = 0.3  # training statements built as "<subject> <link> <value>"
FILLER_SHARE = 0.3  # training turns with filler words slipped in


@dataclass(frozen=True)
class Fact:
    slot: Slot
    value: str

    @property
    def answer(self) -> str:
        return with_value(self.slot.answer, self.value)

    @property
    def restated(self) -> str:
        return with_value(self.slot.fact, self.value)


def statement(fact: Fact, rng: random.Random, split: Split, update: bool = False) -> str:
    phrasings = fact.slot.phrasings(split)
    template = rng.choice(phrasings.updates if update else phrasings.statements)
    if split == "train":  # the held-out side keeps its templates exactly
        if not update and fact.slot.subject and rng.random() < LINKED_SHARE:
            template = _linked(fact.slot, rng)
        template = _varied(template, rng, fact.slot.subject)
    return with_value(template, fact.value)


def question(slot: Slot, rng: random.Random, split: Split) -> str:
    template = rng.choice(slot.phrasings(split).questions)
    return _varied(template, rng, slot.subject) if split == "train" else template


def _linked(slot: Slot, rng: random.Random) -> str:
    """A "<subject> <link> <value>" statement template for ``slot``."""
    link = rng.choice(WHEN_LINKS if slot.pool in ("when", "date") else LINKS)
    if rng.random() < 0.3:
        link = f"{rng.choice(ASIDES)} {link}"
    return f"{slot.subject} {link} {{v}}."


def _varied(template: str, rng: random.Random, subject: str) -> str:
    """A training template with the words around its subject and value varied."""
    return _dressed(_padded(template, rng, subject), rng)


def _dressed(template: str, rng: random.Random) -> str:
    """Now and then, a training template with an opener before it and/or a closer after it."""
    if rng.random() >= DRESSED_SHARE:
        return template
    if rng.random() < 0.7:
        template = _put_before(rng.choice(OPENERS), template)
    if rng.random() < 0.4:
        template += f" {rng.choice(CLOSERS)}"
    return template


def _padded(template: str, rng: random.Random, subject: str) -> str:
    """Now and then, a training template with filler words slipped in between two of its
    words, never inside the subject and never right after the value."""
    if rng.random() >= FILLER_SHARE:
        return template
    if subject:  # glued, so the subject's words (and a "'s name" after them) stay together
        glued = re.escape(subject) + "(?:'s name)?"
        template = re.sub(glued, lambda m: m.group().replace(" ", "\0"), template, flags=re.I)
    words = template.split(" ")
    spot = rng.choice([i for i in range(len(words)) if i == 0 or "{" not in words[i - 1]])
    if spot == 0:
        padded = _put_before(filler(rng), template)
    else:
        padded = " ".join([*words[:spot], filler(rng), *words[spot:]])
    return padded.replace("\0", " ")


def _put_before(words: str, template: str) -> str:
    """``words`` leading ``template``, whose first letter goes lower case unless a value or "I"."""
    keep_case = template.startswith(("{", "I ", "I'"))
    first = template[0] if keep_case else template[0].lower()
    return f"{words} {first}{template[1:]}"


def reply(slot: Slot, known: dict[str, Fact]) -> str:
    """The correct answer given what the user has told so far."""
    fact = known.get(slot.key)
    return fact.answer if fact else ABSTAIN.format(topic=slot.topic)


def new_fact(slot: Slot, rng: random.Random, split: Split, old: Fact | None = None) -> Fact:
    return Fact(slot, draw_value(slot.pool, rng, split, avoid=[old.value] if old else ()))


def questions_about(facts: Sequence[Fact], split: Split) -> list[str]:
    """At least three distinct questions that the facts answer, spread over the facts.

    A fact's questions come from fixed places spread over its phrasings, so its n-th
    question always has the same form. Drawn at random, they taught the model no order,
    and writing greedily it gave its favourite question three times.
    """
    per_fact = max(1, -(-3 // len(facts)))
    asked: list[str] = []
    for fact in facts:
        options = fact.slot.phrasings(split).questions
        asked += [options[i * len(options) // per_fact] for i in range(per_fact)]
    return asked


def note_task(rng: random.Random, split: Split, facts: Sequence[Fact]) -> tuple[str, str]:
    """(user turn, reply) for one of the two tasks sleep asks of the model."""
    note = " ".join(statement(fact, rng, split) for fact in facts)
    if rng.random() < 0.5:
        lines = [f"{i}. {q}" for i, q in enumerate(questions_about(facts, split), 1)]
        return note_task_text(rng.choice(QUESTIONS_TASK[split]), note), "\n".join(lines)
    lines = [f"- {fact.restated}" for fact in facts]
    return note_task_text(rng.choice(RESTATE_TASK[split]), note), "\n".join(lines)


def recital(notes: Sequence[str], rng: random.Random, split: Split) -> tuple[str, str]:
    """(user turn, reply) for "what did I tell you today?": the notes, word for word.

    Besides being useful, it is the densest copying signal in the corpus, which
    is what makes a small model learn to read its context in minutes.
    """
    asked = rng.choice(RECITE_TASK[split])
    if not notes:
        return asked, NOTHING_TOLD
    return asked, RECITAL_HEADER + "\n" + "\n".join(f"- {note}" for note in notes)


def random_facts(rng: random.Random, split: Split, count: int) -> list[Fact]:
    return [new_fact(slot, rng, split) for slot in rng.sample(SLOTS, count)]


def _told_notes(rng: random.Random, split: Split) -> tuple[list[str], dict[str, Fact]]:
    """Notes with some facts, a few changed later, and unrelated turns among them."""
    # Mostly short notes, where matching a question to its note is learned fast, some long.
    most = rng.choice(MOST_FACTS)
    known = {fact.slot.key: fact for fact in random_facts(rng, split, rng.randint(1, most))}
    said = {key: statement(fact, rng, split) for key, fact in known.items()}
    notes = list(said.values())
    changeable = [fact for fact in known.values() if fact.slot.can_change]
    for old in rng.sample(changeable, min(len(changeable), rng.choice([0, 0, 1, 2, 3]))):
        fact = new_fact(old.slot, rng, split, old)
        after = notes.index(said[old.slot.key])
        notes.insert(rng.randint(after + 1, len(notes)), statement(fact, rng, split, update=True))
        known[fact.slot.key] = fact
    for _ in range(rng.randint(0, min(6, MAX_NOTES - len(notes)))):
        other = rng.choice(SMALL_TALK[split])[0] if rng.random() < 0.5 else None
        other = other or question(rng.choice(SLOTS), rng, split)
        notes.insert(rng.randint(0, len(notes)), other)
    return notes, known


def training_transcript(rng: random.Random, split: Split = "train") -> list[Message]:
    """A system turn and a conversation of 2-8 exchanges, notes (or none) in its first turn."""
    notes, known = _told_notes(rng, split) if rng.random() < 0.85 else ([], {})
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for _ in range(rng.randint(2, 8)):
        roll = rng.random()
        untold = [slot for slot in SLOTS if slot.key not in known]
        if roll < 0.45 and known:
            slot = known[rng.choice(list(known))].slot
            turn = question(slot, rng, split), reply(slot, known)
        elif roll < 0.65:
            slot = rng.choice(untold)
            turn = question(slot, rng, split), reply(slot, known)
        elif roll < 0.75:
            old = known.get(rng.choice(SLOTS).key)
            if old and old.slot.can_change:
                fact = new_fact(old.slot, rng, split, old)
                said = statement(fact, rng, split, update=True)
                turn = said, ACKNOWLEDGE_UPDATE.format(answer=fact.answer)
            else:
                fact = new_fact(rng.choice(untold), rng, split)
                turn = statement(fact, rng, split), ACKNOWLEDGE.format(answer=fact.answer)
            known[fact.slot.key] = fact
        elif roll < 0.8:
            turn = rng.choice(SMALL_TALK[split])
        elif roll < 0.9:
            turn = recital(notes, rng, split)
        else:
            turn = note_task(rng, split, random_facts(rng, split, rng.randint(1, 3)))
        said = with_notes(notes, turn[0]) if len(messages) == 1 else turn[0]
        messages += [
            {"role": "user", "content": said},
            {"role": "assistant", "content": turn[1]},
        ]
    return messages


def transcripts(seed: int, split: Split = "train") -> Iterator[list[Message]]:
    """An endless, reproducible stream of transcripts."""
    rng = random.Random(seed)
    while True:
        yield training_transcript(rng, split)


def render_message(message: Message) -> str:
    """One turn in the ChatML layout (the starter's and Qwen2's chat template).

    The drift slice is rendered this way for every model: a ratio of perplexities
    on the same text, not the text the model's own template would make."""
    return f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n"


def encode_transcript(
    tokenize: Tokenize, messages: list[Message], max_tokens: int | None = None
) -> tuple[list[int], list[int]] | None:
    """Token ids of the rendered transcript, and labels that keep only the assistant's words.

    Each turn is tokenized on its own; this matches tokenizing the whole text
    because every turn starts with a special token. The assistant header is
    context, not target: at chat time the template supplies it. With
    ``max_tokens``, the transcript is cut after its last whole exchange that
    fits, and None is returned when not even the first one does.
    """
    ids: list[int] = []
    labels: list[int] = []
    fitted = 0  # length of the whole exchanges that fit so far
    for message in messages:
        if message["role"] == "assistant":
            head = tokenize("<|im_start|>assistant\n")
            body = tokenize(message["content"] + "<|im_end|>")
            tail = tokenize("\n")
            ids += head + body + tail
            labels += [IGNORE] * len(head) + body + [IGNORE] * len(tail)
        else:
            piece = tokenize(render_message(message))
            ids += piece
            labels += [IGNORE] * len(piece)
        if max_tokens is not None and len(ids) > max_tokens:
            break
        if message["role"] == "assistant":
            fitted = len(ids)
    else:
        return ids, labels
    return (ids[:fitted], labels[:fitted]) if fitted else None
