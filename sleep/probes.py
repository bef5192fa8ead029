"""What a night teaches and checks: probes about the day's notes, and negatives.

A *note* is one thing the user said. A *probe* is a question the model should
answer after sleep without the note, with the answer the teacher (the model
before tonight, the note in context) gives, and the answer's *value*: its words
that come from the note and not from the question ("Ramona" for "What is my
sister called?"). Verification checks the value, not the wording. A *negative*
is a question about something the user never said; its answer is ``ABSTAIN``.

The teacher writes the questions (a few examples show it the form); the
filters here keep those about the note in the user's voice, and add the
reverse direction ("Who is Ramona?"), which models do not infer by themselves.
Everything here is plaintext and lives only in RAM.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from assistant.prompting import SYSTEM_PROMPT
from assistant.retrieval import STOP_WORDS

ABSTAIN = "You haven't told me that."

# Words that say what kind of thing is asked, not which one: sharing them does not make a
# question about a note ("name" in "my sister's name" and "my boss's name").
GENERIC_WORDS = frozenset(
    [
        "name",
        "names",
        "called",
        "call",
        "favourite",
        "favorite",
        "time",
        "day",
        "date",
        "remember",
        "tell",
        "told",
        "know",
        "now",
        "new",
        "actually",
        "correction",
        "again",
        "also",
        "just",
        "really",
        "please",
        "any",
        "kind",
        "let",
        "put",
        "say",
        "said",
        "go",
        "goes",
        "going",
        "get",
        "got",
        "think",
        "want",
        "mention",
        "something",
        "lately",
        "become",
        "became",
        "down",
        "up",
        "usually",
        "always",
        "these",
        "days",
        "moment",
        "our",
        "might",
        "spend",
        "did",
        "about",
        "remind",
        "idea",
        "happen",
        "could",
        "would",
        "can",
        "should",
    ]
)
# Capitalised, but not names: the first word of a sentence is not checked at all.
_NOT_NAMES = frozenset(
    [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
        "I",
        "I'm",
        "I've",
        "I'd",
    ]
)
_WORD = re.compile(r"\w+")
_LIST_MARK = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")
_YOUR = re.compile(r"\byour\b", re.IGNORECASE)
_TOKEN = re.compile(r"[\w'-]+|[.!?]")

QUESTIONS_TASK = "Write the questions I could ask you later about this, one per line:"
# Examples of the form only (no fact a user is likely to tell): questions in the user's voice,
# several wordings, both directions.
QUESTION_EXAMPLES = (
    (
        "My cousin is called Theodora.",
        "What is my cousin's name?\nWhat's my cousin called?\nWho is Theodora?\n"
        "Do you remember my cousin's name?",
    ),
    (
        "I usually drink green tea in the morning.",
        "What do I drink in the morning?\nWhat kind of tea do I drink?\n"
        "When do I drink green tea?\nWhat is my morning drink?",
    ),
    (
        "The plumber comes on Thursday at 9 am.",
        "When does the plumber come?\nWhat day is the plumber coming?\n"
        "Who comes on Thursday at 9 am?\nWhat time does the plumber come?",
    ),
)

# How people ask about one of their things, by what the note says of it: a time, a name, or
# anything else; and when they have forgotten what kind of thing it was.
WHEN_QUESTIONS = (
    "When is {}?",
    "What day is {}?",
    "What time is {}?",
    "Do you know when {} is?",
)
NAME_QUESTIONS = (
    "What is {}'s name?",
    "What's {} called?",
    "What is {}?",
    "Do you know {}'s name?",
)
WHAT_QUESTIONS = (
    "What is {}?",
    "What's {}?",
    "Do you know {}?",
    "Tell me {}, please.",
)
ABOUT_QUESTIONS = (
    "What did I tell you about {}?",
    "What do you know about {}?",
)


# Personal questions a user might ask and never have answered, in the frames probes use: those
# the notes say nothing about become negatives. Relatives, pets, appointments, places, tastes:
# the kinds of things people tell an assistant, so that a frame learned for one of them ("What
# is my father's name?") is not answered for the others.
_RELATIVES = [
    "mother",
    "father",
    "sister",
    "brother",
    "son",
    "daughter",
    "grandmother",
    "grandfather",
    "aunt",
    "uncle",
    "cousin",
    "niece",
    "nephew",
    "partner",
    "wife",
    "husband",
    "best_friend",
    "neighbour",
    "boss",
    "colleague",
    "roommate",
    "landlord",
    "doctor",
    "dentist",
    "teacher",
]
_PETS = ["dog", "cat", "rabbit", "parrot", "hamster", "horse", "goldfish", "tortoise"]
_EVENTS = [
    "dentist_appointment",
    "doctor's_appointment",
    "haircut",
    "job_interview",
    "car_service",
    "eye_exam",
    "piano_lesson",
    "yoga_class",
    "book_club",
    "football_practice",
    "team_meeting",
    "flight",
]
NEGATIVE_QUESTIONS = (
    *(
        frame.format(f"my {who.replace('_', ' ')}")
        for who in (*_RELATIVES, *_PETS)
        for frame in (*NAME_QUESTIONS, *ABOUT_QUESTIONS)
    ),
    *(
        frame.format(f"my {event.replace('_', ' ')}")
        for event in _EVENTS
        for frame in (*WHEN_QUESTIONS, *ABOUT_QUESTIONS)
    ),
    "Which city do I live in?",
    "Where did I grow up?",
    "Where do I work?",
    "What is my job?",
    "When is my birthday?",
    "What is my favourite food?",
    "What is my favourite colour?",
    "What music do I like?",
    "What is my favourite book?",
    "What is my favourite film?",
    "What do I like to drink?",
    "Which team do I support?",
    "Am I allergic to anything?",
    "What car do I drive?",
    "What is my hobby?",
    "Which language am I learning?",
    "What sport do I play?",
    "Where am I going on holiday?",
)
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ren",
    "tu",
    "sa",
    "vel",
    "dor",
    "pi",
    "ne",
    "zan",
    "qu",
    "or",
    "bel",
    "fi",
    "ta",
]


@dataclass(frozen=True)
class Probe:
    """A question, the note its answer comes from ("" for a negative), the teacher's answer
    and the value a right answer names (empty for a negative)."""

    question: str
    note: str
    answer: str
    values: tuple[str, ...]

    def to_json(self) -> list:
        return [self.question, self.note, self.answer, list(self.values)]

    @classmethod
    def from_json(cls, data: list) -> Probe:
        question, note, answer, values = data
        return cls(question, note, answer, tuple(values))


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def content_words(text: str) -> set[str]:
    """The words that say what a text is about: no stop words, no generic ones."""
    return {_stem(w) for w in words(text) if w not in STOP_WORDS and w not in GENERIC_WORDS}


def related(question: str, text: str) -> bool:
    """Whether a question is about something ``text`` mentions."""
    return bool(content_words(question) & content_words(text))


def value_words(answer: str, note: str, question: str) -> tuple[str, ...]:
    """The answer's words that come from the note and not from the question, in order."""
    from_note = content_words(note) - content_words(question)
    return tuple(dict.fromkeys(w for w in words(answer) if _stem(w) in from_note))


def names(answer: str, values: Sequence[str]) -> bool:
    """Whether an answer names every value word."""
    said = {_stem(w) for w in words(answer)}
    return bool(values) and all(_stem(v) in said for v in values)


def mentions_any(answer: str, values: Iterable[str]) -> bool:
    """Whether an answer names any of the values (a leak, for a negative)."""
    said = {_stem(w) for w in words(answer)}
    return any(_stem(v) in said for v in values)


def questions_messages(note: str, examples: int = len(QUESTION_EXAMPLES)) -> list[dict[str, str]]:
    """Messages asking the teacher for questions about one note, after worked examples."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for example, questions in QUESTION_EXAMPLES[:examples]:
        messages += [
            {"role": "user", "content": f"{QUESTIONS_TASK}\n{example}"},
            {"role": "assistant", "content": questions},
        ]
    messages.append({"role": "user", "content": f"{QUESTIONS_TASK}\n{note}"})
    return messages


def parse_questions(text: str, note: str) -> list[str]:
    """The questions of a model-written list that are about the note, in the user's voice:
    each ends with "?", and every word saying what it asks about is one of the note's."""
    about = content_words(note)
    questions = []
    for line in text.splitlines():
        line = _YOUR.sub("my", _LIST_MARK.sub("", line).strip())
        asked = content_words(line)
        if line.endswith("?") and asked and asked <= about and line not in questions:
            questions.append(line[0].upper() + line[1:])
    return questions


def note_names(note: str) -> list[str]:
    """Capitalised words, or runs of them, not starting a sentence: the names the user gave."""
    found: list[str] = []
    run: list[str] = []
    sentence_start = True
    for token in [*_TOKEN.findall(note), "."]:
        if token[0].isupper() and not sentence_start and token not in _NOT_NAMES:
            run.append(token)
        else:
            if run:
                found.append(" ".join(run))
            run = []
        sentence_start = token in ".!?"
    return list(dict.fromkeys(found))


_SUBJECT = re.compile(r"\b(?:my|our)\s+([a-z' -]+)", re.IGNORECASE)
_WHEN = re.compile(
    r"\b(?:today|tomorrow|tonight|may \d|"
    + "|".join(name.lower() for name in _NOT_NAMES if name[0] != "I" and name != "May")
    + r"|\d{1,2}(?::\d\d)?\s*(?:am|pm))\b",
    re.IGNORECASE,
)
MAX_SUBJECT_WORDS = 3
# Generic words that can still be part of what a thing is called ("my favourite music").
_GENERIC_IN_SUBJECTS = frozenset(["name", "favourite", "favorite", "new"])


def subjects(note: str) -> list[str]:
    """The user's things a note speaks of, as "my ..." ("my tax meeting", "my sister's name"):
    the words after "my" or "our" up to the verb (a stop word, or a word in -s after the
    first, such as "goes" or "answers", but not "class")."""
    found = []
    for match in _SUBJECT.finditer(note):
        kept: list[str] = []
        for word in match.group(1).lower().split()[:MAX_SUBJECT_WORDS]:
            bare = word.removesuffix("'s")
            generic = bare in GENERIC_WORDS and bare not in _GENERIC_IN_SUBJECTS
            if not bare.replace("-", "").isalpha() or bare in STOP_WORDS or generic:
                break
            if kept and bare == word and word.endswith("s") and not word.endswith("ss"):
                break
            kept.append(word)
        while kept and (kept[-1].endswith("'s") or kept[-1] in _GENERIC_IN_SUBJECTS - {"name"}):
            kept.pop()
        if kept:
            found.append("my " + " ".join(kept))
    return list(dict.fromkeys(found))


def subject_questions(note: str) -> list[str]:
    """The questions a user asks about each of their things the note speaks of: when it is,
    for a note with a day or time; its name, for a note that gives one; else what it is."""
    found = []
    for subject in subjects(note):
        if _WHEN.search(note):
            frames = WHEN_QUESTIONS
        elif note_names(note) and not subject.endswith("name"):
            frames = NAME_QUESTIONS
        else:
            frames = WHAT_QUESTIONS
        found += [frame.format(subject) for frame in (*frames, *ABOUT_QUESTIONS)]
    return found


# First-person statements with no "my ..." subject ("I'd like concise answers.", "I'm allergic
# to pollen."): the lasting habits, tastes and states a user tells, by verb, so that moods
# ("I'm feeling tired.") and one-off events ("I had a long day.") are not asked about.
_HABITS = frozenset(
    [
        "like",
        "love",
        "prefer",
        "want",
        "enjoy",
        "hate",
        "drink",
        "eat",
        "drive",
        "ride",
        "support",
        "play",
        "speak",
        "study",
        "read",
        "watch",
        "order",
        "wear",
        "collect",
        "use",
        "own",
        "live",
        "work",
        "get",
    ]
)
_STATES = frozenset(["allergic", "based", "employed", "married", "from", "into"])
_PARTICLES = frozenset(
    ["around", "in", "at", "as", "to", "for", "on", "with", "by", "of", "about", "from", "into"]
)
_TASTES = frozenset(["like", "love", "want", "enjoy", "prefer"])
_PLACES = frozenset(["live", "work", "based"])  # asked "where" when followed by "in" or "at"
_ADVERBS = frozenset(
    ["usually", "always", "really", "now", "just", "also", "still", "often", "mostly", "actually"]
)
_AUXILIARIES = {"'d": "would", " would": "would", "'m": "am", " am": "am"}  # else "do"
_FIRST_PERSON = re.compile(r"\bI(?P<aux>'d|'m| would| am)?\s+(?P<rest>[^.!?,;:]+)")
MIN_KIND_WORDS = 3  # an object of this many content words has a head that is not the value


def first_person_questions(note: str) -> list[str]:
    """How a user asks about a habit, taste or state they told in the first person: "Where
    do I live?", "Who do I support?", "What am I allergic to?"; a taste also as a
    preference ("What would I prefer?", "What kind of answers would I prefer?" for "I'd
    like concise cheerful answers."): the starter, the note in context, reads "I'd like"
    in its notes as its own wish and answers "I'm glad to have you here.", but answers
    "prefer" from the note."""
    found = []
    for match in _FIRST_PERSON.finditer(note):
        aux = _AUXILIARIES.get(match.group("aux") or "", "do")
        rest = [w for w in match.group("rest").split() if w not in _ADVERBS]
        if not rest or rest[0] not in (_STATES if aux == "am" else _HABITS):
            continue
        verb = [rest[0]]
        while len(verb) < len(rest) and rest[len(verb)] in _PARTICLES:
            verb.append(rest[len(verb)])
        thing = rest[len(verb) :]
        if not thing:
            continue
        wh, asked = "What", verb
        if verb[0] in _PLACES and verb[-1] in ("in", "at"):
            wh, asked = "Where", verb[:-1]
        elif verb[-1] == "from":
            wh = "Where"
        elif thing[0][0].isupper():
            wh = "Who"
        ways = [asked, ["prefer"]] if verb[0] in _TASTES else [asked]
        found += [f"{wh} {aux} I {' '.join(way)}?" for way in ways]
        found += ["What is my preference?"] if verb[0] in _TASTES else []
        head = thing[-1]
        described = [w for w in thing if w.lower() not in STOP_WORDS]
        if len(described) >= MIN_KIND_WORDS and head.isalpha() and head.islower():
            found += [f"What kind of {head} {aux} I {' '.join(way)}?" for way in ways]
    return list(dict.fromkeys(found))


def reverse_questions(note: str) -> list[str]:
    """The reverse direction: "Who is Ramona?" for each name in the note."""
    return [f"{'What' if ' ' in name else 'Who'} is {name}?" for name in note_names(note)]


# What a user may ask about a person they told of and never told: near misses for a night.
_UNTOLD_OF_PEOPLE = (
    "When is {}'s birthday?",
    "Where does {} live?",
    "What does {} do for a living?",
)
_KINDS = (_RELATIVES, _PETS, _EVENTS)  # things of one kind: told one, ask of the others


def negative_questions(about: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """``count`` questions about nothing in ``about`` (notes and earlier probes): personal
    questions, and who-is questions about invented names."""
    invented = [
        f"Who is {(rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES)).capitalize()}?"
        for _ in range(max(2, count // 4))
    ]
    candidates = [
        q for q in (*NEGATIVE_QUESTIONS, *invented) if not any(related(q, t) for t in about)
    ]
    return rng.sample(candidates, min(count, len(candidates)))


def near_misses(
    questions: Sequence[str], about: Sequence[str], count: int, rng: random.Random
) -> list[str]:
    """Up to ``count`` never-told questions as close as can be to what was told: each asked
    question about a relative, pet or event, put to another of its kind that ``about`` does
    not speak of ("What's my grandmother called?" from "What's my mother called?"), and
    what was never said of a told relative ("When is my sister's birthday?")."""
    told = {t for kind in _KINDS for t in kind if any(_named(t).search(a) for a in about)}
    found = []
    for question in questions:
        for kind in _KINDS:
            for thing in (t for t in kind if _named(t).search(question)):
                others = [t for t in kind if t != thing and t not in told]
                if others:
                    other = rng.choice(others).replace("_", " ")
                    found.append(_named(thing).sub(other, question))
    for told_one in (t for t in _RELATIVES if t in told):
        found += [frame.format(f"my {told_one.replace('_', ' ')}") for frame in _UNTOLD_OF_PEOPLE]
    untold = [
        q
        for q in dict.fromkeys(found)
        if not any(content_words(q) <= content_words(t) for t in about)
    ]
    return rng.sample(untold, min(count, len(untold)))


@cache
def _named(thing: str) -> re.Pattern[str]:
    """Where a text names ``thing`` ("mother", not inside "grandmother")."""
    return re.compile(rf"\b{thing.replace('_', ' ')}\b", re.IGNORECASE)


def hold_out(probes: Sequence[Probe], rng: random.Random) -> tuple[list[Probe], list[Probe]]:
    """(train, held out): each note is verified by its own held-out probes, two when it has
    three or more (of different wordings where it can: a note learned in one frame only is
    not learned), one when it has two; a single probe is trained on."""
    train: list[Probe] = []
    held_out: list[Probe] = []
    by_note: dict[str, list[Probe]] = {}
    for probe in probes:
        by_note.setdefault(probe.note, []).append(probe)
    for group in by_note.values():
        wanted = 2 if len(group) >= 3 else len(group) - 1
        order = rng.sample(group, len(group))
        chosen: list[Probe] = []
        for probe in order:
            if len(chosen) < wanted and all(_frame(probe) != _frame(c) for c in chosen):
                chosen.append(probe)
        chosen += [p for p in order if p not in chosen][: wanted - len(chosen)]
        held_out += chosen
        train += [p for p in group if p not in chosen]
    return train, held_out


def _frame(probe: Probe) -> tuple[str, ...]:
    """How a question is put: its first two words ("what is", "who is", "tell me")."""
    return tuple(probe.question.lower().split()[:2])
