"""The recall benchmark: does the assistant remember what it was told, once the logs are gone?

Each simulated day a fictional user tells facts in a few conversations, through
the chat engine and into the encrypted store, like a real user. The benchmark
then asks about them in fresh conversations: with today's memories in context
(the upper bound), closed book before the night's consolidation (should be
near zero), and closed book after it, with the raw logs gone. Everything the
user says and asks uses the held-out phrasings and values of ``facts``.
Answers are scored by the exact expected value, with only case and punctuation
normalised; an answer that also names another value the user gave (a different
name, the old value of a changed fact) is wrong, so listing everything cannot pass.
Never-told questions count as leaks when answered with any value the user gave,
and a shipped set of general questions the base model answers right
(``recall.world``) says how much world knowledge survives the nights.
"""

from __future__ import annotations

import json
import math
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

from assistant.chat import ChatSession
from assistant.engine import ChatEngine
from assistant.errors import AssistantError
from assistant.paths import Paths
from assistant.recall.corpus import (
    IGNORE,
    Fact,
    encode_transcript,
    new_fact,
    question,
    statement,
    transcripts,
)
from assistant.recall.facts import (
    ACKNOWLEDGE,
    ACKNOWLEDGE_UPDATE,
    QUESTIONS_TASK,
    RECITE_TASK,
    RESTATE_TASK,
    SLOTS,
    SMALL_TALK,
    Slot,
    Wording,
)
from assistant.recall.world import WORLD_QUESTIONS, WorldQuestion
from assistant.runtime import Runtime
from assistant.store.keys import initialize

# The night's consolidation: given the benchmark's runtime, learn the day's memories
# (and delete their raw logs); returns a report to include in the JSON.
Consolidation = Callable[[Runtime], dict]

SPLIT = "held_out"
ABSTAIN_MARKERS = ("havent told me", "have not told me", "dont know", "do not know")
DRIFT_TRANSCRIPTS = 12
DRIFT_SEED = 20261121
REPLY_TOKENS = 64
MAX_FAILURES = 8  # wrong answers quoted in the report, to see what goes wrong


# -- scoring ----------------------------------------------------------------------


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def mentions(answer: str, value: str) -> bool:
    """Whether ``value`` appears in ``answer`` as whole words (after normalising both)."""
    return f" {normalise(value)} " in f" {normalise(answer)} "


def is_abstention(answer: str) -> bool:
    text = normalise(answer)
    return any(marker in text for marker in ABSTAIN_MARKERS)


_ACKNOWLEDGEMENTS = tuple(t.split("{")[0] for t in (ACKNOWLEDGE, ACKNOWLEDGE_UPDATE))
_NOTE_TASKS = QUESTIONS_TASK[SPLIT] + RESTATE_TASK[SPLIT] + RECITE_TASK[SPLIT]
_SMALL_TALK_SAID = frozenset(said for said, _ in SMALL_TALK[SPLIT])


def reply_kind(asked: str, reply: str) -> str:
    """What an assistant turn of the drift slice does, so drift says what a night changed:
    answering from notes, saying it was not told, acknowledging a statement, the note tasks
    sleep needs (questions, restatements, recitals), or small talk."""
    if is_abstention(reply):
        return "dont_know"
    if reply.startswith(_ACKNOWLEDGEMENTS):
        return "acknowledgement"
    if asked.startswith(_NOTE_TASKS):
        return "note_task"
    if asked in _SMALL_TALK_SAID:
        return "small_talk"
    return "answer"


def is_correct(answer: str, expected: str, wrong: tuple[str, ...] = ()) -> bool:
    """The expected value is named, and no other value the user gave for a like slot is."""
    return mentions(answer, expected) and not any(
        mentions(answer, other) for other in wrong if normalise(other) != normalise(expected)
    )


# -- the scenario -----------------------------------------------------------------


@dataclass(frozen=True)
class RecallSettings:
    seed: int = 0
    nights: int = 1
    facts_per_night: int = 20
    updates_per_night: int = 2
    unknown_per_night: int = 10
    facts_per_conversation: int = 5


@dataclass
class Day:
    facts: list[Fact]  # told for the first time tonight
    updates: list[Fact]  # new values for facts told earlier (tonight or before)
    conversations: list[list[str]]  # what the user says, conversation by conversation
    unknown: list[Slot]  # never told, asked to see the model admit it
    statements: dict[Fact, str]  # the turn that told each fact and update

    @property
    def wordings(self) -> dict[Fact, Wording]:
        """How each fact and update was said: in its own wording or a frame shared with others."""
        return {fact: fact.slot.wording(text, fact.value) for fact, text in self.statements.items()}


def plan(settings: RecallSettings) -> list[Day]:
    """The user's days: which facts are told, changed and never told, and in what words."""
    rng = random.Random(settings.seed)
    slots = list(SLOTS)
    rng.shuffle(slots)
    unknown, tellable = slots[: settings.unknown_per_night], slots[settings.unknown_per_night :]
    if settings.nights * settings.facts_per_night > len(tellable):
        raise AssistantError(
            f"The corpus has {len(tellable)} facts to tell beside the"
            f" {settings.unknown_per_night} never told; asked for"
            f" {settings.nights} x {settings.facts_per_night}.",
            hint="Lower --nights or --facts-per-night.",
        )
    current: dict[str, Fact] = {}
    nights: list[Day] = []
    for n in range(settings.nights):
        chunk = tellable[n * settings.facts_per_night : (n + 1) * settings.facts_per_night]
        facts = [new_fact(slot, rng, SPLIT) for slot in chunk]
        earlier = [f for f in current.values() if f.slot.can_change]
        candidates = earlier or [f for f in facts if f.slot.can_change]
        olds = rng.sample(candidates, min(settings.updates_per_night, len(candidates)))
        updates = [new_fact(old.slot, rng, SPLIT, old) for old in olds]
        said = [statement(fact, rng, SPLIT) for fact in facts]
        conversations = [
            said[i : i + settings.facts_per_conversation]
            for i in range(0, len(said), settings.facts_per_conversation)
        ]
        for turns in conversations:
            turns.insert(rng.randint(0, len(turns)), rng.choice(SMALL_TALK[SPLIT])[0])
        changes = [statement(fact, rng, SPLIT, update=True) for fact in updates]
        if changes:  # told last, after the values they replace
            conversations.append(changes)
        statements = dict(zip(facts + updates, said + changes, strict=True))
        current.update({fact.slot.key: fact for fact in facts + updates})
        nights.append(Day(facts, updates, conversations, unknown, statements))
    return nights


# -- measuring ------------------------------------------------------------------------


@dataclass
class Stage:
    """Cost of one stage of a night."""

    seconds: float = 0.0
    turns: int = 0
    prompt_tokens: int = 0
    reply_tokens: int = 0

    def add(self, session: ChatSession, turns: int) -> None:
        self.turns += turns
        self.prompt_tokens += session.usage.prompt_tokens
        self.reply_tokens += session.usage.reply_tokens


@dataclass
class Score:
    right: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.right += ok
        self.total += 1

    @property
    def rate(self) -> float | None:
        return round(self.right / self.total, 4) if self.total else None


@dataclass
class Tally:
    scores: dict[str, Score] = field(default_factory=dict)
    # The fact metrics again, by how the fact was said: {metric: {wording: score}}.
    by_wording: dict[str, dict[str, Score]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)

    def record(
        self,
        metric: str,
        ok: bool,
        asked: str,
        answer: str,
        expected: str,
        wording: Wording | None = None,
        failed: bool | None = None,
    ) -> None:
        """Count ``ok`` for ``metric`` (the rate is the share of ``ok``); a failure (by
        default: not ``ok``) is quoted in the report."""
        self.scores.setdefault(metric, Score()).add(ok)
        if wording:
            self.by_wording.setdefault(metric, {}).setdefault(wording, Score()).add(ok)
        failed = not ok if failed is None else failed
        if failed and len(self.failures) < MAX_FAILURES:
            self.failures.append(
                {"metric": metric, "question": asked, "expected": expected, "answer": answer}
            )

    def merge(self, other: Tally) -> None:
        _add_scores(self.scores, other.scores)
        for metric, scores in other.by_wording.items():
            _add_scores(self.by_wording.setdefault(metric, {}), scores)
        self.failures += other.failures[: max(0, MAX_FAILURES - len(self.failures))]

    def rates(self) -> dict[str, float | None]:
        return {name: score.rate for name, score in self.scores.items()}

    def rates_by_wording(self) -> dict[str, dict[str, float | None]]:
        return {
            metric: {wording: score.rate for wording, score in sorted(scores.items())}
            for metric, scores in self.by_wording.items()
        }


def _add_scores(total: dict[str, Score], more: dict[str, Score]) -> None:
    for name, score in more.items():
        mine = total.setdefault(name, Score())
        mine.right += score.right
        mine.total += score.total


# (metric, the fact to recall or the slot never told, values that must not be named)
Question = tuple[str, "Fact | Slot", tuple[str, ...]]


@dataclass
class NightQuestions:
    in_context: list[Question]  # with the day's memories in the prompt
    before: list[Question]  # closed book, before the night's consolidation
    after: list[Question]  # closed book, after it


def night_questions(
    night: Day, current: dict[str, Fact], earlier: list[Fact], told: list[Fact]
) -> NightQuestions:
    """What to ask about one night, given the newest value of every fact told so far."""
    updated = list(dict.fromkeys(fact.slot.key for fact in night.updates))  # in a fixed order
    tonight = [f for f in night.facts if f.slot.key not in updated]
    changed = [current[key] for key in updated]
    retained = list(
        {f.slot.key: current[f.slot.key] for f in earlier if f.slot.key not in updated}.values()
    )

    def probes(metric: str, facts: list[Fact]) -> list[Question]:
        # Naming another value from the same pool as well (another name, an old value) is wrong.
        return [
            (metric, f, tuple(t.value for t in told if t.slot.pool == f.slot.pool)) for f in facts
        ]

    everything = tuple(f.value for f in told)
    return NightQuestions(
        in_context=probes("recall_in_context", tonight)
        + probes("update_accuracy_in_context", changed)
        + [("abstain_rate_unknown", slot, everything) for slot in night.unknown],
        before=probes("recall_closed_book_before", tonight),
        after=probes("recall_closed_book_after", tonight)
        + probes("update_accuracy", changed)
        + probes("retention", retained)
        + [("abstain_rate_unknown_after", slot, everything) for slot in night.unknown],
    )


class RecallBenchmark:
    """Runs the nights of a plan against one runtime (a throwaway home with the model)."""

    def __init__(
        self,
        runtime: Runtime,
        settings: RecallSettings,
        consolidation: Consolidation | None = None,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.consolidation = consolidation
        self.progress = progress
        self.questions: dict[str, str] = {}
        self.wordings: dict[Fact, Wording] = {}  # how each fact of the plan is said
        self._rng = random.Random(settings.seed + 1)
        self._engine: ChatEngine | None = None

    @property
    def engine(self) -> ChatEngine:
        if self._engine is None:
            self._engine = self.runtime.load_engine()
        return self._engine

    def close_engine(self) -> None:
        """Closed after a consolidation (committed experts may have changed) and at the end."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def question_for(self, slot: Slot) -> str:
        """One held-out question per slot, the same at every stage so stages compare."""
        if slot.key not in self.questions:
            self.questions[slot.key] = question(slot, self._rng, SPLIT)
        return self.questions[slot.key]

    def session(self, with_memories: bool) -> ChatSession:
        return ChatSession(
            self.runtime.memory,
            self.engine,
            max_reply_tokens=REPLY_TOKENS,
            with_memories=with_memories,
        )

    def tell(self, night: Day) -> Stage:
        stage = Stage()
        started = time.perf_counter()
        for turns in night.conversations:
            session = self.session(with_memories=True)
            for text in turns:
                session.respond(text)
            stage.add(session, len(turns))
        stage.seconds = round(time.perf_counter() - started, 3)
        return stage

    def ask(self, probes: list[Question], tally: Tally, with_memories: bool) -> Stage:
        """Ask each probe's question in a fresh conversation and score the answer."""
        stage = Stage()
        started = time.perf_counter()
        for metric, target, wrong in probes:
            slot = target.slot if isinstance(target, Fact) else target
            asked = self.question_for(slot)
            session = self.session(with_memories)
            answer = session.answer(asked)
            stage.add(session, 1)
            if isinstance(target, Fact):
                ok = is_correct(answer, target.value, wrong)
                tally.record(metric, ok, asked, answer, target.value, self.wordings[target])
            else:
                leaked = any(mentions(answer, w) for w in wrong)
                ok = is_abstention(answer) and not leaked
                tally.record(metric, ok, asked, answer, "(says it was not told)")
                if metric == "abstain_rate_unknown_after":
                    # The share of never-told questions answered with a value the user gave.
                    tally.record(
                        "leak_rate_unknown_after", leaked, asked, answer, "", failed=leaked
                    )
        stage.seconds = round(time.perf_counter() - started, 3)
        return stage

    def world_knowledge(
        self, questions: Sequence[WorldQuestion], with_memories: bool = False
    ) -> list[WorldQuestion]:
        """The general questions answered right in fresh conversations (closed book, or with
        the day's memories there for chat to retrieve: a note must not hijack them)."""
        return [item for item, _, right in self.world_answers(questions, with_memories) if right]

    def world_answers(
        self, questions: Sequence[WorldQuestion], with_memories: bool = False
    ) -> list[tuple[WorldQuestion, str, bool]]:
        """Each general question, its answer in a fresh conversation, and whether it is right."""
        answered = []
        for item in questions:
            answer = self.session(with_memories).answer(item.question)
            answered.append((item, answer, any(mentions(answer, a) for a in item.answers)))
        return answered

    def drift_slice(self) -> dict[str, list[float]]:
        """[summed negative log-likelihood, tokens] of the assistant's turns in a fixed held-out
        slice of the corpus, by ``reply_kind`` and in all ("all")."""
        engine = self.engine
        bos = engine.tokenize("", add_bos=True)
        totals: dict[str, list[float]] = {}
        stream = transcripts(DRIFT_SEED, split=SPLIT)
        for _ in range(DRIFT_TRANSCRIPTS):
            messages = next(stream)
            fitted = encode_transcript(
                lambda text: engine.tokenize(text, add_bos=False),
                messages,
                max_tokens=engine.n_ctx - len(bos),
            )
            if fitted is None:
                continue
            ids, labels = bos + fitted[0], [IGNORE] * len(bos) + fitted[1]
            positions = [i for i in range(1, len(ids)) if labels[i] != IGNORE]
            logprobs = engine.token_logprobs(ids, positions)
            kinds = [
                reply_kind(asked["content"], reply["content"])
                for asked, reply in pairwise(messages)
                if reply["role"] == "assistant"
            ]
            # Each scored assistant turn is one run of consecutive positions, in order.
            turn, previous = -1, None
            for position, logprob in zip(positions, logprobs, strict=True):
                if previous is None or position != previous + 1:
                    turn += 1
                previous = position
                for kind in (kinds[turn], "all"):
                    total = totals.setdefault(kind, [0.0, 0])
                    total[0] -= logprob
                    total[1] += 1
        return totals

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.close_engine()

    def _run(self) -> dict:
        nights = plan(self.settings)
        told = [f for night in nights for f in night.facts + night.updates]
        self.wordings = {fact: w for night in nights for fact, w in night.wordings.items()}
        slice_before = self.drift_slice()
        known = self.world_knowledge(WORLD_QUESTIONS)  # what the base model gets right
        overall = Tally()
        reports = []
        current: dict[str, Fact] = {}
        earlier: list[Fact] = []
        for n, night in enumerate(nights, 1):
            tally = Tally()
            self.progress(f"night {n}: telling {len(night.facts)} facts")
            stages = {"tell": self.tell(night)}
            current.update({f.slot.key: f for f in night.facts + night.updates})
            questions = night_questions(night, current, earlier, told)
            self.progress(f"night {n}: asking with the day's memories in context")
            stages["ask_in_context"] = self.ask(questions.in_context, tally, with_memories=True)
            with_notes = self.world_knowledge(known, with_memories=True)
            self.progress(f"night {n}: asking closed book before consolidation")
            stages["ask_closed_book_before"] = self.ask(questions.before, tally, False)
            started = time.perf_counter()
            consolidation = self.consolidate(n)
            stages["consolidate"] = Stage(seconds=round(time.perf_counter() - started, 3))
            self.progress(f"night {n}: asking closed book after consolidation")
            stages["ask_closed_book_after"] = self.ask(questions.after, tally, False)
            started = time.perf_counter()
            drift = _drift(slice_before, self.drift_slice())
            stages["drift"] = Stage(seconds=round(time.perf_counter() - started, 3))
            kept = self.world_knowledge(known)
            world_retained = _share(kept, known)
            earlier += night.facts + night.updates
            overall.merge(tally)
            reports.append(
                {
                    "night": n,
                    "facts": len(night.facts),
                    "updates": len(night.updates),
                    "unknown": len(night.unknown),
                    **tally.rates(),
                    "by_wording": tally.rates_by_wording(),
                    "world_knowledge_retained": world_retained,
                    "world_knowledge_with_notes": _share(with_notes, known),
                    "night_seconds": stages["consolidate"].seconds,
                    "notes_committed": consolidation.get("notes_committed"),
                    "drift": drift["all"],
                    "drift_by_kind": {k: v for k, v in drift.items() if k != "all"},
                    "consolidation": consolidation,
                    "stages": {name: asdict(stage) for name, stage in stages.items()},
                }
            )
        return {
            "benchmark": "recall",
            "settings": asdict(self.settings),
            "consolidation": "none" if self.consolidation is None else "sleep",
            "perplexity_before": round(_perplexity(slice_before["all"]), 4),
            "overall": {
                **overall.rates(),
                "by_wording": overall.rates_by_wording(),
                "world_knowledge_retained": reports[-1]["world_knowledge_retained"],
                "world_knowledge_with_notes": min(r["world_knowledge_with_notes"] for r in reports)
                if known
                else None,
                "world_knowledge_asked": len(known),
                "night_seconds": [report["night_seconds"] for report in reports],
                "notes_committed": [report["notes_committed"] for report in reports],
                "drift": reports[-1]["drift"],
            },
            "nights": reports,
            "failures": overall.failures,
        }

    def consolidate(self, night: int) -> dict:
        """Run the night's consolidation; without one, the night only deletes the day's logs."""
        memory = self.runtime.memory
        if self.consolidation is None:
            report: dict = {"learned": False}
            sealed = memory.seal_epoch()
            if sealed is not None:
                report["deleted_turns"] = memory.delete_epoch(sealed).turns_deleted
        else:
            self.progress(f"night {night}: consolidating")
            report = self.consolidation(self.runtime)
            self.close_engine()
        report["raw_turns_left"] = memory.count()
        return report


def _share(part: Sequence, whole: Sequence) -> float | None:
    return round(len(part) / len(whole), 4) if whole else None


def _perplexity(total: list[float]) -> float:
    return math.exp(total[0] / total[1])


def _drift(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, float]:
    """Perplexity after / before, in all and by kind of turn."""
    return {kind: round(_perplexity(after[kind]) / _perplexity(before[kind]), 4) for kind in before}


@contextmanager
def benchmark_runtime(
    model_source: Path, model_name: str, settings: dict | None = None
) -> Iterator[Runtime]:
    """A throwaway home holding only the model to test (a GGUF file or a Hugging Face
    directory), with a random key on disk, and ``settings`` as its config (the defaults
    where not given)."""
    with tempfile.TemporaryDirectory(prefix="assistant-recall-") as root:
        base = Path(root)
        paths = Paths(base / "data", base / "config", base / "cache").ensure()
        if settings:
            paths.config_file.write_text(json.dumps(settings))
        runtime = Runtime(paths=paths)
        try:
            initialize(runtime.database, paths.key_file, "keyfile")
            runtime.models.add(str(model_source), name=model_name)
            yield runtime
        finally:
            runtime.database.close()
