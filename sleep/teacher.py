"""The night's text side, on the chat engine (llama.cpp): the teacher writes, the candidate answers.

The teacher is the model before tonight (base plus the experts already
learned) with a note in context, laid out exactly as chat lays it out, so what
it answers is what chat would have answered that day. The same engine, with
tonight's candidate expert added, answers closed-book as chat will after the
night: verification and on-policy samples run on what the user will run.
llama.cpp generates several times faster than the training framework, and it
keeps the keys and values of a prompt's start for the next prompt that shares it
(the note's prefix, across that note's questions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from assistant.engine import ChatEngine, ExpertSpec
from assistant.prompting import chat_prompt
from assistant.sleep import probes
from assistant.sleep.probes import Probe

QUESTION_SAMPLES = 2  # question lists per note: one greedy, the rest sampled for variety
QUESTION_TOKENS = 48
CANDIDATE = Path("<tonight's candidate expert>")  # its identity in the engine; no such file


@dataclass(frozen=True)
class Reply:
    tokens: list[int]
    raw: str  # the tokens' text exactly, leading whitespace included: what lessons learn
    finished: bool  # ended by itself, not cut at the token limit

    @property
    def text(self) -> str:
        return self.raw.strip()

    def answer(self, end_token: int) -> list[int]:
        """The tokens to learn: with the end of turn when the reply ended by itself."""
        return [*self.tokens, end_token] if self.finished else list(self.tokens)


class Teacher:
    def __init__(self, engine: ChatEngine, max_answer_tokens: int, questions_per_note: int) -> None:
        self.engine = engine
        self.learned = engine.experts
        self.max_answer_tokens = max_answer_tokens
        self.questions_per_note = questions_per_note

    def prompt(self, notes: Sequence[str], question: str) -> list[int]:
        """Chat's prompt for ``question`` with these notes (none: closed book)."""
        prompt = chat_prompt(notes, [], question)
        return self.engine.tokenize(self.engine.render(prompt.messages) + prompt.reply_prefix)

    def reply(
        self,
        prompt: Sequence[int],
        *,
        temperature: float = 0.0,
        seed: int = 0,
        max_tokens: int | None = None,
    ) -> Reply:
        """A reply up to its first blank line (a brief answer, not what the model rambles on
        to after it). Its tokens are the ones generated, leading newlines included: a
        student taught a stripped answer learns a first token the teacher never gave."""
        tokens, finished = self.engine.complete(
            prompt, max_tokens or self.max_answer_tokens, temperature=temperature, seed=seed
        )
        text = self.engine.detokenize(tokens)
        start = len(text) - len(text.lstrip())
        cut = text.find("\n\n", start)
        if cut >= 0:
            kept = next(
                i for i in range(len(tokens) + 1) if len(self.engine.detokenize(tokens[:i])) >= cut
            )
            tokens, text, finished = tokens[:kept], text[:cut], True
        return Reply(tokens, text, finished)

    def answer(self, notes: Sequence[str], question: str) -> Reply:
        return self.reply(self.prompt(notes, question))

    def questions(self, note: str, seed: int) -> list[str]:
        """Questions about the note: how a user asks about each thing of theirs it speaks of
        and each habit or taste it tells, the teacher's own (greedy, then sampled), then the
        reverse direction."""
        request = self._questions_request(note)
        found = [*probes.subject_questions(note), *probes.first_person_questions(note)]
        for sample in range(QUESTION_SAMPLES if request else 0):
            if len(set(found)) >= self.questions_per_note:
                break  # what more lists would add is cut below
            tokens, _ = self.engine.complete(
                request,
                QUESTION_TOKENS,
                temperature=0.0 if sample == 0 else 0.8,
                seed=seed + sample,
            )
            found += probes.parse_questions(self.engine.detokenize(tokens), note)
        found += probes.reverse_questions(note)
        return list(dict.fromkeys(found))[: self.questions_per_note]

    def _questions_request(self, note: str) -> list[int]:
        """The request with as many worked examples as the context holds (none fit: [])."""
        for examples in range(len(probes.QUESTION_EXAMPLES), -1, -1):
            messages = probes.questions_messages(note, examples)
            request = self.engine.tokenize(self.engine.render(messages))
            if len(request) + QUESTION_TOKENS <= self.engine.n_ctx:
                return request
        return []

    def probe(self, question: str, note: str, later: Sequence[str] = ()) -> Probe | None:
        """The question answered from its note, or from the latest later note that is about
        everything the question asks (a correction: the newest wins, the older note is not
        asked); None when the answer names nothing from the note (the teacher did not read
        it, or the question gives the answer away)."""
        asked = probes.content_words(question)
        newer = [n for n in later if asked <= probes.content_words(n)]
        source = newer[-1] if newer else note
        reply = self.answer([source], question)
        values = probes.value_words(reply.text, source, question)
        if reply.finished and values:
            return Probe(question, source, reply.raw, values)
        return None

    @contextmanager
    def candidate(self, gguf: bytes) -> Iterator[None]:
        """The engine answers as chat will after tonight: with the candidate expert too (its
        GGUF LoRA, loaded from memory)."""
        self.engine.set_experts([*self.learned, ExpertSpec(CANDIDATE, read=lambda: gguf)])
        try:
            yield
        finally:
            self.engine.set_experts(self.learned)
