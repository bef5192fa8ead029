"""What a user can tell the assistant: slots, their phrasings, value pools and the held-out split.

A *slot* is one thing about the user that has a value ("my sister's name",
"my dentist appointment"). Each slot has training phrasings and held-out
phrasings (statements, questions, updates); values come from combinatorial
pools. The split is a fixed property of this module, never of a seed: a value
is held out when its CRC32 falls in one bucket, a phrasing when it is listed as
held out. The recall benchmark tells and asks only on the ``held_out`` side.
(The ``train`` side fed the retired from-scratch demo model; it is kept with
the generator and its tests.)
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from assistant.prompting import QUESTIONS_PROMPT, RESTATE_PROMPT

Split = Literal["train", "held_out"]
SPLITS: tuple[Split, ...] = ("train", "held_out")
Wording = Literal["shared_frame", "own_wording"]


def split_of_value(value: str, pool: str) -> Split:
    """Every fourth value is held out, by CRC32 of its distinctive word(s).

    Values built around an invented word ("New Gaburg", "Gaburg Rovers", a
    person called Gaburg) share that word's split, so a held-out word never
    reaches the training side inside some other value.
    """
    key = value.split()[_ROOT_WORD[pool]] if pool in _ROOT_WORD else value
    return "held_out" if zlib.crc32(key.lower().encode()) % 4 == 0 else "train"


# -- value pools ----------------------------------------------------------------


def _phrases(text: str) -> list[str]:
    """A whitespace-separated word list in which ``_`` joins multi-word entries."""
    return [item.replace("_", " ") for item in text.split()]


_ONSETS = _phrases("b d f g k l m n p r s t v z br dr kl st tr sh ch j h w")
_VOWELS = _phrases("a e i o u ai ea ou")
_CODAS = ["", "", "n", "l", "r", "s", "th", "m"]
_FIRST_NAMES = _phrases("""
Abigail Adrian Alma Amara Ambrose Anika Arlo Astrid Aurelio Beatrix Bertram
Bianca Calla Casimir Cecily Cedric Clement Cosima Dalia Delphine Desmond Dorian Edwina Elodie
Emeric Esme Ezra Fabian Felix Fenna Florian Gideon Greta Hamish Helga Ignatius Imogen Ingrid
Isidore Jasper Jolene Jorah Juno Kasimir Katya Lazlo Leopold Linnea Lorcan Lucian Magnus
Malachi Marisol Matthias Mireille Nadia Niamh Nikolai Octavia Odette Orson Otto Pallas Percival
Philippa Quentin Ramona Rosalind Rufus Sabine Saoirse Sebastian Severin Sigrid Silas Solveig
Tamsin Tobias Ulrich Valentina Vesna Wendell Wilhelmina Xavier Yara Yusuf Zelda Zoltan""")
_PET_NAMES = _phrases("""
Biscuit Noodle Pickles Waffles Muffin Dumpling Pretzel Nugget Sprocket Gizmo
Widget Bramble Thistle Clover Acorn Pebble Marbles Bubbles Doodle Ziggy Fudge Crumpet Tofu
Mochi Churro Nacho Taco Bagel Rolo Oreo Snickers Tinkerbell Pippin Scout Ranger Bandit Rascal
Buster Chester Rocco Bruno Lulu Kiki Coco Fifi Gigi Bijou Zuzu""")
_TOWN_SUFFIXES = _phrases("ton ford burg ville field mouth haven wick bridge stead dale port")
_TOWN_PREFIXES = ["", "", "", "New ", "Port ", "Lake ", "North ", "East "]
_COMPANY_SUFFIXES = _phrases("""Labs Systems Foods Bank Logistics Studios Health Energy Motors Press
Robotics Insurance Pharma Analytics Textiles Airlines""")
_JOB_FIELDS = _phrases("""data marketing sales software civil research finance product graphic sound
clinical museum""")
_JOB_ROLES = _phrases("analyst engineer manager designer consultant researcher technician")
_TRADES = _phrases("""teacher nurse pharmacist electrician architect librarian chef pilot plumber
journalist accountant carpenter dentist firefighter lawyer mechanic photographer translator
veterinarian baker""")
_JOB_GRADES = _phrases("senior junior freelance head trainee")
_MONTHS = _phrases("""January February March April May June July August September October November
December""")
_DAYS = _phrases("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
_FOOD_STYLES = _phrases("""spicy grilled fried baked creamy lemon garlic smoked sweet roasted cheesy
crispy""")
_DISHES = _phrases("""
ramen lasagna tacos curry dumplings risotto paella pancakes falafel sushi burritos
noodles chili soup pizza gnocchi""")
_DRINK_STYLES = _phrases("iced hot green mint ginger black spiced sparkling vanilla")
_DRINKS = _phrases("tea coffee lemonade cocoa cider smoothie latte kombucha")
_SHADES = _phrases("dark light pale bright deep soft dusty royal")
_HUES = _phrases("blue green red purple orange yellow pink grey teal brown turquoise maroon")
_MUSIC_STYLES = _phrases("""Brazilian Cuban Irish Korean Nordic Celtic classic modern indie acoustic
electronic baroque smooth progressive""")
_GENRES = _phrases("jazz rock folk pop blues metal techno soul reggae country punk opera funk")
_TITLE_ADJECTIVES = _phrases("""Silent Hidden Last Silver Broken Golden Quiet Lost Crimson Endless
Winter Distant Burning Sleeping Hollow Painted""")
_TITLE_NOUNS = _phrases("""Garden River Tower Orchard Harbour Kingdom Mirror Lantern Island Forest
Machine Letter Station Mountain Voyage Compass""")
_TEAM_NAMES = _phrases("Falcons Rovers Wolves Comets Pirates Hornets Titans Otters Badgers Knights")
_ALLERGENS = _phrases("""peanuts shellfish penicillin pollen latex walnuts sesame soy gluten mustard
celery lupin sulphites aspirin ibuprofen bee_stings wasp_stings horse_hair dust_mites mould
hazelnuts almonds cashews pistachios kiwi mango strawberries avocado lactose eggs chamomile
ragweed nickel cinnamon coriander oats buckwheat""")
_CAR_COLOURS = _phrases("red blue silver black white green grey")
_CAR_MAKES = _phrases("""
Toyota Honda Ford Volvo Mazda Kia Skoda Audi Fiat Subaru Tesla Renault Peugeot
Nissan Hyundai Volkswagen""")
_CAR_BODIES = _phrases("hatchback estate van pickup coupe convertible SUV saloon")
_HOBBY_VERBS = _phrases("painting collecting photographing restoring building carving sketching")
_HOBBY_THINGS = _phrases("""old_radios model_trains vintage_clocks bonsai_trees birds lighthouses
wooden_boats antique_maps kites mushrooms""")
_ANSWER_LENGTHS = _phrases("short brief long detailed concise thorough simple")
_ANSWER_TONES = _phrases("friendly formal casual technical plain cheerful direct polite")


def _syllable_name(rng: random.Random) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 2))]
    return (
        parts[0]
        + "".join(parts[1:])
        + rng.choice(_ONSETS[:12])
        + rng.choice(_VOWELS)
        + rng.choice(_CODAS)
    ).capitalize()


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _town(rng: random.Random) -> str:
    root = _syllable(rng)
    return rng.choice(_TOWN_PREFIXES) + (root + rng.choice(_TOWN_SUFFIXES)).capitalize()


def _job(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{rng.choice(_JOB_FIELDS)} {rng.choice(_JOB_ROLES)}"
    return f"{rng.choice(_JOB_GRADES)} {rng.choice(_TRADES)}"


def _one_of(*choices: Sequence[str]) -> Callable[[random.Random], str]:
    return lambda rng: " ".join(rng.choice(c) for c in choices)


POOLS: dict[str, Callable[[random.Random], str]] = {
    "person": lambda rng: rng.choice(_FIRST_NAMES) if rng.random() < 0.4 else _syllable_name(rng),
    "pet": lambda rng: rng.choice(_PET_NAMES) if rng.random() < 0.4 else _syllable_name(rng),
    "place": _town,
    "company": lambda rng: f"{_syllable_name(rng)} {rng.choice(_COMPANY_SUFFIXES)}",
    "job": _job,
    "date": lambda rng: f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}",
    "when": lambda rng: (
        f"{rng.choice(_DAYS)} at {rng.randint(1, 12)}:{rng.choice(['00', '15', '30', '45'])}"
        f" {rng.choice(['am', 'pm'])}"
    ),
    "food": _one_of(_FOOD_STYLES, _DISHES),
    "drink": _one_of(_DRINK_STYLES, _DRINKS),
    "colour": _one_of(_SHADES, _HUES),
    "music": _one_of(_MUSIC_STYLES, _GENRES),
    "title": lambda rng: f"The {rng.choice(_TITLE_ADJECTIVES)} {rng.choice(_TITLE_NOUNS)}",
    "team": lambda rng: f"{_town(rng).split()[-1]} {rng.choice(_TEAM_NAMES)}",
    "allergen": lambda rng: rng.choice(_ALLERGENS),
    "car": _one_of(_CAR_COLOURS, _CAR_MAKES, _CAR_BODIES),
    "hobby": _one_of(_HOBBY_VERBS, _HOBBY_THINGS),
    "answer_style": lambda rng: (
        f"{rng.choice(_ANSWER_LENGTHS)} {rng.choice(_ANSWER_TONES)} answers"
    ),
}


# Which word of a value is its invented root, for pools that have one.
_ROOT_WORD = {"place": -1, "company": 0, "team": 0}


def draw_value(pool: str, rng: random.Random, split: Split, avoid: Sequence[str] = ()) -> str:
    """A value from ``pool`` on the ``split`` side, different from those in ``avoid``."""
    while True:
        value = POOLS[pool](rng)
        if split_of_value(value, pool) == split and value not in avoid:
            return value


# -- slots ----------------------------------------------------------------------


@dataclass(frozen=True)
class Phrasings:
    """Templates with ``{v}`` (the value) or ``{a}`` (the value with its article)."""

    statements: tuple[str, ...]
    questions: tuple[str, ...]
    updates: tuple[str, ...] = ()


@dataclass(frozen=True)
class Slot:
    key: str  # unique, e.g. "family.sister"
    kind: str  # the kind of fact, e.g. "family"
    pool: str
    answer: str  # the canonical reply, second person: "Your sister is called {v}."
    fact: str  # the same, third person, for the "restate" task
    topic: str  # what is unknown, for "You haven't told me {topic}."
    train: Phrasings
    held_out: Phrasings
    subject: str = ""  # what the fact is about, first person ("my sister"); "" if none reads well
    framed: frozenset[str] = frozenset()  # its templates from the frames every slot shares

    @property
    def can_change(self) -> bool:
        return bool(self.train.updates)

    def phrasings(self, split: Split) -> Phrasings:
        return self.train if split == "train" else self.held_out

    def wording(self, said: str, value: str) -> Wording:
        """Whether ``said`` (a held-out statement of ``value``) is in a shared frame or in
        the slot's own words: a model trained on the corpus reads the two very differently."""
        framed = any(with_value(t, value) == said for t in self.framed)
        return "shared_frame" if framed else "own_wording"


def with_value(template: str, value: str) -> str:
    article = "an" if value[0].lower() in "aeiou" else "a"
    text = template.replace("{v}", value).replace("{a}", f"{article} {value}")
    return text[0].upper() + text[1:]


def _capitalised(text: str) -> str:
    return text[0].upper() + text[1:]


def _your(phrase: str) -> str:
    return re.sub(r"\bmy\b", "your", re.sub(r"\bI\b", "you", phrase))


def _the_users(phrase: str) -> str:
    return re.sub(r"\bmy\b", "the user's", phrase)


# Frames shared by every slot that has a noun phrase ("my sister's name").
_WHAT = Phrasings(
    statements=(
        "{np} is {v}.",
        "Just so you know, {np} is {v}.",
        "For the record, {np} is {v}.",
        "By the way, {np} is {v}.",
        "I should mention that {np} is {v}.",
        "Note this: {np} is {v}.",
        "Remember that {np} is {v}.",
        "Quick fact about me: {np} is {v}.",
    ),
    questions=(
        "What is {np}?",
        "What's {np}?",
        "Do you remember {np}?",
        "Can you tell me {np}?",
        "Remind me, what is {np}?",
        "Do you know {np}?",
        "Quick question: what is {np}?",
        "I forgot {np}. What is it?",
        "Tell me {np}, please.",
        "What did I say {np} is?",
    ),
    updates=(
        "Actually, {np} is now {v}.",
        "Update: {np} is {v} now.",
        "Things changed: {np} is now {v}.",
    ),
)
_WHAT_HELD_OUT = Phrasings(
    statements=(
        "Something you might want to know: {np} is {v}.",
        "Let me tell you that {np} is {v}.",
    ),
    questions=(
        "Do you happen to know {np}?",
        "Could you remind me what {np} is?",
        "Any idea what {np} is?",
        "What was {np} again?",
    ),
    updates=("Correction, {np} is now {v}.",),
)
_WHEN = Phrasings(
    statements=(
        "{np} is on {v}.",
        "Just so you know, {np} is on {v}.",
        "For the record, {np} is on {v}.",
        "By the way, {np} is on {v}.",
        "Remember that {np} is on {v}.",
        "Note this: {np} is on {v}.",
    ),
    questions=(
        "When is {np}?",
        "When's {np}?",
        "Do you remember when {np} is?",
        "Can you tell me when {np} is?",
        "Remind me, when is {np}?",
        "Do you know when {np} is?",
        "Quick question: when is {np}?",
        "What day is {np}?",
    ),
    updates=(
        "{np} moved to {v}.",
        "Update: {np} is now on {v}.",
        "{np} was rescheduled to {v}.",
    ),
)
_WHEN_HELD_OUT = Phrasings(
    statements=(
        "Something you might want to know: {np} is on {v}.",
        "Let me tell you that {np} is on {v}.",
    ),
    questions=(
        "Do you happen to know when {np} is?",
        "Could you remind me when {np} is?",
        "Any idea when {np} is?",
        "When was {np} again?",
    ),
    updates=("Correction, {np} is now on {v}.",),
)


def _slot(
    key: str,
    kind: str,
    pool: str,
    nps: Sequence[str] = (),
    *,
    when: bool = False,
    answer: str = "",
    fact: str = "",
    topic: str = "",
    train: Phrasings = Phrasings((), ()),
    held_out: Phrasings = Phrasings((), ()),
    can_change: bool = True,
) -> Slot:
    """A slot: its own phrasings plus the shared frames filled with each noun phrase."""
    frames, frames_held_out = (_WHEN, _WHEN_HELD_OUT) if when else (_WHAT, _WHAT_HELD_OUT)
    framed: set[str] = set()

    def fill(own: Phrasings, shared: Phrasings) -> Phrasings:
        def each(own_part: tuple[str, ...], shared_part: tuple[str, ...]) -> tuple[str, ...]:
            filled = [_capitalised(f.replace("{np}", np)) for f in shared_part for np in nps]
            framed.update(filled)
            return tuple(own_part) + tuple(filled)

        return Phrasings(
            each(own.statements, shared.statements),
            each(own.questions, shared.questions),
            each(own.updates, shared.updates) if can_change else (),
        )

    train, held_out = fill(train, frames), fill(held_out, frames_held_out)
    canonical = nps[0] if nps else ""
    answer = answer or f"{_your(canonical)} is {'on ' if when else ''}{{v}}."
    return Slot(
        key=key,
        kind=kind,
        pool=pool,
        answer=_capitalised(answer),
        fact=fact or _capitalised(re.sub(r"\b[Yy]our\b", "the user's", answer)),
        topic=topic or (f"when {_your(canonical)} is" if when else _your(canonical)),
        train=train,
        held_out=held_out,
        subject="" if "{a}" in answer else canonical.removesuffix("'s name"),
        framed=frozenset(framed),
    )


def _relative(kind: str, who: str) -> Slot:
    return _slot(
        f"{kind}.{who.replace(' ', '_')}",
        kind,
        "person",
        [f"my {who}'s name"],
        answer=f"Your {who} is called {{v}}.",
        train=Phrasings(
            (f"My {who} is called {{v}}.", f"I have a {who} named {{v}}.", f"{{v}} is my {who}."),
            (f"What's my {who} called?", f"Who is my {who}?", f"What is the name of my {who}?"),
        ),
        held_out=Phrasings((f"My {who} goes by {{v}}.",), (f"Who did I say my {who} is?",)),
        can_change=False,
    )


def _pet(animal: str) -> Slot:
    return _slot(
        f"pet.{animal.replace(' ', '_')}",
        "pet",
        "pet",
        [f"my {animal}'s name"],
        answer=f"Your {animal} is called {{v}}.",
        train=Phrasings(
            (
                f"My {animal} is called {{v}}.",
                f"I have a {animal} named {{v}}.",
                f"We call our {animal} {{v}}.",
            ),
            (
                f"What's my {animal} called?",
                f"What is the name of my {animal}?",
                f"What did I name my {animal}?",
            ),
        ),
        held_out=Phrasings((f"Our {animal} answers to {{v}}.",), (f"How is my {animal} named?",)),
        can_change=False,
    )


def _appointment(event: str) -> Slot:
    return _slot(
        f"appointment.{re.sub(r'[^a-z]+', '_', event)}",
        "appointment",
        "when",
        [f"my {event}"],
        when=True,
        train=Phrasings(
            (f"I booked my {event} for {{v}}.", f"I have my {event} on {{v}}."),
            (f"What time is my {event}?",),
        ),
        held_out=Phrasings((f"Put my {event} down for {{v}}.",), (f"At what time is my {event}?",)),
    )


def _favourite(key: str, pool: str, nps: Sequence[str], train: Phrasings, held: Phrasings):
    return _slot(f"favourite.{key}", f"favourite {key}", pool, nps, train=train, held_out=held)


SLOTS: tuple[Slot, ...] = (
    *(
        _relative("family", who)
        for who in _phrases(
            "mother father sister brother son daughter grandmother grandfather aunt uncle"
            " cousin niece nephew"
        )
    ),
    *(
        _relative("friends", who)
        for who in ("best friend", "neighbour", "boss", "colleague", "roommate", "landlord")
    ),
    _slot(
        "partner",
        "partner",
        "person",
        ["my partner's name"],
        answer="Your partner is called {v}.",
        train=Phrasings(
            ("My partner is called {v}.", "I'm married to {v}.", "I live with my partner {v}."),
            ("Who is my partner?", "What's my partner called?"),
        ),
        held_out=Phrasings(("My other half is {v}.",), ("Who am I married to?",)),
        can_change=False,
    ),
    *(
        _pet(animal)
        for animal in (
            "dog",
            "cat",
            "rabbit",
            "parrot",
            "hamster",
            "horse",
            "tortoise",
            "goldfish",
            "guinea pig",
        )
    ),
    *(
        _appointment(event)
        for event in (
            "dentist appointment",
            "doctor's appointment",
            "haircut",
            "meeting with my manager",
            "car service",
            "yoga class",
            "piano lesson",
            "eye exam",
            "job interview",
            "vet appointment",
            "tax meeting",
            "book club",
        )
    ),
    _slot(
        "home_city",
        "home city",
        "place",
        ["my home city", "the city I live in"],
        train=Phrasings(
            ("I live in {v}.", "I'm based in {v}."),
            ("Where do I live?", "Which city do I live in?"),
            ("I moved to {v}.", "I live in {v} now."),
        ),
        held_out=Phrasings(
            ("These days I call {v} home.",),
            ("In which city do I live?",),
            ("I just relocated to {v}.",),
        ),
    ),
    _slot(
        "hometown",
        "hometown",
        "place",
        ["my hometown"],
        train=Phrasings(("I grew up in {v}.",), ("Where did I grow up?",)),
        held_out=Phrasings(("I spent my childhood in {v}.",), ("Where am I from originally?",)),
        can_change=False,
    ),
    _slot(
        "workplace",
        "workplace",
        "company",
        ["my employer", "the company I work for"],
        train=Phrasings(
            ("I work at {v}.", "I work for {v}."),
            ("Where do I work?", "Who do I work for?"),
            ("I started a new job at {v}.", "I now work at {v}."),
        ),
        held_out=Phrasings(
            ("I'm employed by {v}.",),
            ("Which company employs me?",),
            ("I switched jobs, I'm at {v} now.",),
        ),
    ),
    _slot(
        "job",
        "job",
        "job",
        ["my job", "my job title"],
        answer="You work as {a}.",
        fact="The user works as {a}.",
        train=Phrasings(
            ("I work as {a}.", "I'm {a} by profession."),
            ("What do I do for a living?", "What is my profession?"),
            ("I got promoted, I'm now {a}.", "I changed careers and now work as {a}."),
        ),
        held_out=Phrasings(
            ("My day job is being {a}.",),
            ("What's my line of work?",),
            ("I have a new role: {a}.",),
        ),
    ),
    _slot(
        "birthday",
        "birthday",
        "date",
        ["my birthday"],
        when=True,
        train=Phrasings(("I was born on {v}.",), ("When was I born?",)),
        held_out=Phrasings(("I celebrate my birthday on {v}.",), ("On what date was I born?",)),
        can_change=False,
    ),
    _favourite(
        "food",
        "food",
        ["my favourite food", "my favourite dish"],
        Phrasings(("I love {v} more than any other food.",), ("What food do I like best?",)),
        Phrasings(("Nothing beats {v} for me.",), ("Which dish do I enjoy most?",)),
    ),
    _favourite(
        "colour",
        "colour",
        ["my favourite colour"],
        Phrasings(("I like {v} best of all colours.",), ("Which colour do I like most?",)),
        Phrasings(("My top colour is {v}.",), ("What colour do I prefer?",)),
    ),
    _favourite(
        "music",
        "music",
        ["my favourite music", "my favourite kind of music"],
        Phrasings(("I mostly listen to {v}.",), ("What music do I listen to?",)),
        Phrasings(("My playlists are full of {v}.",), ("What sort of music do I enjoy?",)),
    ),
    _favourite(
        "book",
        "title",
        ["my favourite book"],
        Phrasings(
            ("The best book I have read is {v}.", "I keep rereading {v}."),
            ("Which book do I love?",),
        ),
        Phrasings(("My all-time favourite novel is {v}.",), ("What book did I say I like best?",)),
    ),
    _favourite(
        "movie",
        "title",
        ["my favourite movie", "my favourite film"],
        Phrasings(("I could watch {v} every week.",), ("Which movie do I like most?",)),
        Phrasings(("No film beats {v} for me.",), ("What film do I enjoy most?",)),
    ),
    _favourite(
        "drink",
        "drink",
        ["my favourite drink"],
        Phrasings(("I always order {v}.",), ("What do I like to drink?",)),
        Phrasings(("My usual drink is {v}.",), ("Which drink do I prefer?",)),
    ),
    _favourite(
        "team",
        "team",
        ["my favourite team", "the team I support"],
        Phrasings(("I support {v}.", "I'm a big fan of {v}."), ("Which team do I support?",)),
        Phrasings(("I never miss a game of {v}.",), ("Who do I cheer for?",)),
    ),
    _favourite(
        "hobby",
        "hobby",
        ["my hobby", "my favourite hobby"],
        Phrasings(
            ("In my free time I enjoy {v}.", "I'm really into {v}."),
            ("What do I do for fun?", "What do I do in my free time?"),
            ("These days I'm into {v}.",),
        ),
        Phrasings(
            ("On weekends I spend hours {v}.",),
            ("How do I spend my weekends?",),
            ("Lately my hobby has become {v}.",),
        ),
    ),
    _slot(
        "allergy",
        "allergy",
        "allergen",
        ["my allergy"],
        answer="You are allergic to {v}.",
        fact="The user is allergic to {v}.",
        topic="what you are allergic to",
        train=Phrasings(
            ("I'm allergic to {v}.", "I have an allergy to {v}."),
            ("What am I allergic to?", "Do I have any allergies?"),
        ),
        held_out=Phrasings(("I react badly to {v}.",), ("Is there anything I'm allergic to?",)),
        can_change=False,
    ),
    _slot(
        "car",
        "car",
        "car",
        ["my car"],
        answer="You drive {a}.",
        fact="The user drives {a}.",
        topic="what car you drive",
        train=Phrasings(
            ("I drive {a}.", "My car is {a}."),
            ("What car do I drive?", "What kind of car do I have?"),
            ("I sold my old car and bought {a}.", "I drive {a} now."),
        ),
        held_out=Phrasings(
            ("I get around in {a}.",), ("What do I drive?",), ("My new car is {a}.",)
        ),
    ),
    _slot(
        "answer_style",
        "answer preference",
        "answer_style",
        answer="You prefer {v}.",
        fact="The user prefers {v}.",
        topic="how you like your answers",
        train=Phrasings(
            ("I prefer {v}.", "Please give me {v}.", "When you answer me, I like {v}."),
            (
                "How do I like my answers?",
                "What kind of answers do I prefer?",
                "How should you answer me?",
            ),
            ("Actually, I now prefer {v}.", "Change of plan: give me {v}."),
        ),
        held_out=Phrasings(
            ("From now on, I'd like {v}.",),
            ("What style of answer do I want?",),
            ("Going forward I want {v}.",),
        ),
    ),
)
KINDS = sorted({slot.kind for slot in SLOTS})


# -- variety the training side adds -----------------------------------------------------
# The held-out phrasings bring words the model never saw, so the training side wraps its
# own phrasings in words that carry nothing (openers, closers) and also states facts as
# "<subject> <link> <value>" with many links: the model learns to find what a turn is
# about and its value whatever surrounds them, instead of learning the templates.

OPENERS = _phrases("""
Hey, So, Okay, Oh, Also, Well, Listen, One_more_thing: Hmm, Right, Alright, Quick_one:
Oh_and Another_thing: Hi_again. Hello. Ah, Now, Anyway, Before_I_forget, Small_thing:
Sorry_to_bother_you, Honestly, Also_worth_saying: Um, Hey_there,
""")
CLOSERS = _phrases("Thanks. Thanks! Cheers. Just_curious. Okay? Ta. :) Thank_you.")
LINKS = _phrases("""
is is_called is_named has_the_name is_known_as would_be happens_to_be has_always_been is_still
gets_called is_basically is_officially is_just is_simply was_named is_registered_as
""")
WHEN_LINKS = _phrases("""
is_on is_set_for falls_on is_booked_for is_scheduled_for happens_on takes_place_on
got_booked_for is_planned_for is_fixed_for will_be_on
""")
ASIDES = _phrases("really honestly as_you_know of_course by_now actually still officially")
# Words slipped in among a training turn's words, so that words the model has never seen
# (held-out phrasings bring them) read as noise around the subject and the value. None
# occurs in a held-out phrasing; made-up one-syllable words stand for any other word.
FILLER_WORDS = _phrases("""
always usually often sometimes really quite very truly mostly maybe perhaps probably surely
totally basically simply clearly anyway though also even already soon here together once so
well pretty rather fairly somewhat definitely honestly certainly seriously apparently
obviously naturally personally currently said told reckon guess figure heard mentioned noted
wrote mean think believe suppose recall see look
""")


def filler(rng: random.Random) -> str:
    """One to three filler words, real or made up."""
    words = [
        rng.choice(FILLER_WORDS) if rng.random() < 0.5 else _syllable(rng)
        for _ in range(rng.randint(1, 3))
    ]
    return " ".join(words)


# -- small talk -------------------------------------------------------------------

SMALL_TALK: dict[Split, tuple[tuple[str, str], ...]] = {
    "train": (
        ("Hi!", "Hello! How can I help you today?"),
        ("Hello there.", "Hi! What can I do for you?"),
        ("Good morning!", "Good morning! How can I help?"),
        ("How are you?", "I'm doing well, thanks for asking. How can I help?"),
        ("Thanks!", "You're welcome!"),
        ("Thank you so much.", "Happy to help!"),
        ("That's all for now.", "Alright. Talk to you later!"),
        ("I had a long day.", "Sorry to hear that. I hope you get some rest tonight."),
        ("I'm feeling tired.", "Take it easy and get some sleep if you can."),
        ("What can you do?", "I can chat with you and remember what you tell me."),
        ("Are you there?", "Yes, I'm here. What do you need?"),
        ("Tell me something nice.", "You are doing better than you think."),
        ("Good night.", "Good night! Sleep well."),
        ("I'm bored.", "Maybe take a short walk or call a friend."),
        ("It's raining again.", "Rainy days are good for a cup of tea and a book."),
        ("Okay.", "Let me know if you need anything else."),
        ("Nice.", "Glad you think so!"),
        ("I'm back.", "Welcome back! What can I do for you?"),
        ("Can you keep a secret?", "Everything you tell me stays on this computer."),
        ("Who are you?", "I'm your personal assistant, running on your own computer."),
        ("Do you sleep?", "Yes. At night I sleep and sort out what you told me during the day."),
        ("I'm in a good mood today.", "That's great to hear!"),
        ("See you tomorrow.", "See you tomorrow!"),
        ("Let's chat.", "Sure! What's on your mind?"),
    ),
    "held_out": (
        ("Hey, how's it going?", "It's going well, thanks! How can I help you?"),
        ("Morning!", "Good morning! What can I do for you today?"),
        ("Cheers for that.", "You're welcome!"),
        ("I need a break.", "A short break sounds like a good idea."),
        ("What a week.", "Sounds like a busy one. I hope the weekend is calmer."),
        ("Catch you later.", "Talk to you later!"),
    ),
}

# -- the tasks sleep asks of a model --------------------------------------------------

QUESTIONS_TASK: dict[Split, tuple[str, ...]] = {
    "train": (
        QUESTIONS_PROMPT,
        "List questions that this note answers:",
        "What questions could someone ask about this note?",
    ),
    "held_out": ("Write some questions about the following note:",),
}
RESTATE_TASK: dict[Split, tuple[str, ...]] = {
    "train": (
        RESTATE_PROMPT,
        "Summarise what this tells you about the user:",
        "What did you learn about the user from this note?",
    ),
    "held_out": ("Restate the facts in this note:",),
}

RECITE_TASK: dict[Split, tuple[str, ...]] = {
    "train": (
        "What have I told you today?",
        "What did I tell you earlier?",
        "List everything I told you today.",
    ),
    "held_out": ("Remind me of everything I said today.",),
}
RECITAL_HEADER = "Today you told me:"
NOTHING_TOLD = "You haven't told me anything yet today."

ABSTAIN = "You haven't told me {topic}."
ACKNOWLEDGE = "Got it. {answer}"
ACKNOWLEDGE_UPDATE = "Thanks for the update. {answer}"
