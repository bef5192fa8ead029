"""One conversation: remember the turn, build the prompt, stream the reply, remember it.

The user's turn is stored before generation starts and the reply as soon as it
is complete (or stopped), so a crash never loses a turn the user saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from assistant.engine import ChatEngine
from assistant.errors import InvalidMessageError
from assistant.prompting import NOTES_PER_MESSAGE, ChatPrompt, acknowledgement, chat_prompt
from assistant.retrieval import MemoryIndex
from assistant.sleep.triage import about_the_user, day_notes
from assistant.store.memory import MemoryStore, Turn, validate_message


@dataclass
class Usage:
    """Tokens this session has sent to and received from the model."""

    prompt_tokens: int = 0
    reply_tokens: int = 0


class ChatSession:
    """A message that tells something is acknowledged by saying it back (see
    ``prompting.acknowledgement``); any other is answered by the model, with the note of the
    day that answers it, if one does. Notes are what sleep's triage takes from every
    unconsolidated turn, this conversation's included, so chat reads what the night will
    learn. ``with_memories=False`` leaves them out: the closed-book view of the model."""

    def __init__(
        self,
        store: MemoryStore,
        engine: ChatEngine,
        conversation_id: int | None = None,
        max_reply_tokens: int = 256,
        temperature: float = 0.0,
        with_memories: bool = True,
    ) -> None:
        self.store = store
        self.engine = engine
        self.max_reply_tokens = max_reply_tokens
        self.temperature = temperature
        self.usage = Usage()
        self.conversation_id = conversation_id or store.new_conversation()
        self.history: list[Turn] = store.conversation(self.conversation_id)
        # The turns notes come from (None: closed book), and their index once built.
        self._day: list[Turn] | None = store.unconsolidated() if with_memories else None
        self._index: MemoryIndex | None = None

    @property
    def notes(self) -> list[str]:
        """Today's notes, not yet learned, in the order said."""
        return list(self._notes_index().notes)

    def _notes_index(self) -> MemoryIndex:
        """Built when first needed and again only after a new statement, not per message."""
        if self._index is None:
            self._index = MemoryIndex(list(day_notes(self._day or [])))
        return self._index

    def prompt(self, text: str) -> tuple[ChatPrompt, list[int]]:
        """The longest prompt that fits, as (layout, tokens): drop oldest turns, then notes."""
        budget = self.engine.n_ctx - self.max_reply_tokens
        notes = self._notes_index().select(text, NOTES_PER_MESSAGE)
        history = [(t.role, t.text) for t in self.history]
        while True:
            prompt = chat_prompt(notes, history, text)
            tokens = self.engine.tokenize(self.engine.render(prompt.messages) + prompt.reply_prefix)
            if len(tokens) <= budget:
                return prompt, tokens
            if history:
                history = history[2:] if len(history) > 1 else []
            elif notes:
                notes = notes[1:]
            else:
                raise InvalidMessageError(
                    f"The message is too long for the model: {len(tokens)} tokens,"
                    f" the limit is {budget}.",
                    hint="Shorten it, or raise n_ctx in the config file.",
                )

    def respond(
        self,
        text: str,
        on_piece: Callable[[str], None] = lambda _: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Turn | None:
        """Store ``text``, stream a reply through ``on_piece``, store and return the reply."""
        validate_message(text)
        if about_the_user(text):
            said = self._keep("user", text)
            if self._day is not None:  # a new note: the index is built again when next read
                self._day.append(said)
                self._index = None
            reply = acknowledgement(text)
            on_piece(reply)
        else:
            prompt, tokens = self.prompt(text)  # refuses a message too long before storing it
            self._keep("user", text)
            reply = self._generate(prompt.reply_prefix, tokens, on_piece, should_stop)
        return self._keep("assistant", reply) if reply else None

    def _keep(self, role: str, text: str) -> Turn:
        """The turn stored (encrypted) and added to this conversation's history."""
        turn = self.store.append(self.conversation_id, role, text)
        self.history.append(turn)
        return turn

    def answer(self, text: str) -> str:
        """The model's reply to ``text`` in this conversation, with nothing stored.

        Used to probe what the model knows (the recall benchmark, sleep's checks).
        """
        validate_message(text)
        if about_the_user(text):
            return acknowledgement(text)
        prompt, tokens = self.prompt(text)
        return self._generate(prompt.reply_prefix, tokens)

    def _generate(
        self,
        reply_prefix: str,
        tokens: list[int],
        on_piece: Callable[[str], None] = lambda _: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> str:
        """The reply: ``reply_prefix`` (already in ``tokens``) and what the model adds to it."""
        pieces: list[str] = []
        for piece in self.engine.stream(
            tokens, self.max_reply_tokens, self.temperature, should_stop
        ):
            if not pieces and reply_prefix:
                piece = piece.lstrip()  # the prefix ends with its own space
                if not piece:
                    continue
                on_piece(reply_prefix)
            pieces.append(piece)
            on_piece(piece)
        self.usage.prompt_tokens += len(tokens)
        self.usage.reply_tokens += len(pieces)
        return (reply_prefix + "".join(pieces)).strip() if pieces else ""
