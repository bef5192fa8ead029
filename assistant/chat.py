"""One conversation: remember the turn, build the prompt, stream the reply, remember it.

The user's turn is stored before generation starts and the reply as soon as it
is complete (or stopped), so a crash never loses a turn the user saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from assistant.engine import ChatEngine
from assistant.errors import InvalidMessageError
from assistant.memory import MemoryStore, Turn, validate_message
from assistant.prompting import chat_messages
from assistant.retrieval import MemoryIndex

# Share of the prompt budget (in characters, ~4 per token) today's memories may take.
NOTES_SHARE = 0.5
CHARS_PER_TOKEN = 4


@dataclass
class Usage:
    """Tokens this session has sent to and received from the model."""

    prompt_tokens: int = 0
    reply_tokens: int = 0


class ChatSession:
    """``with_memories=False`` leaves today's notes out: the closed-book view of the model."""

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
        self.index = MemoryIndex(
            t.text
            for t in (store.unconsolidated() if with_memories else ())
            if t.role == "user" and t.conversation_id != self.conversation_id
        )

    def prompt(self, text: str) -> tuple[list[dict[str, str]], list[int]]:
        """The longest prompt that fits, as (messages, tokens): drop notes, then oldest turns."""
        budget = self.engine.n_ctx - self.max_reply_tokens
        notes = self.index.select(text, int(budget * CHARS_PER_TOKEN * NOTES_SHARE))
        history = [(t.role, t.text) for t in self.history]
        while True:
            messages = chat_messages(notes, history, text)
            tokens = self.engine.tokenize(self.engine.render(messages))
            if len(tokens) <= budget:
                return messages, tokens
            if history:
                history = history[2:] if len(history) > 1 else []
            elif notes:
                notes = notes[len(notes) // 2 + 1 :] if len(notes) > 1 else []
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
        _, prompt = self.prompt(text)
        self.history.append(self.store.append(self.conversation_id, "user", text))
        reply = self._generate(prompt, on_piece, should_stop)
        if not reply:
            return None
        turn = self.store.append(self.conversation_id, "assistant", reply)
        self.history.append(turn)
        return turn

    def answer(self, text: str) -> str:
        """The model's reply to ``text`` in this conversation, with nothing stored.

        Used to probe what the model knows (the recall benchmark, sleep's checks).
        """
        validate_message(text)
        return self._generate(self.prompt(text)[1])

    def _generate(
        self,
        prompt: list[int],
        on_piece: Callable[[str], None] = lambda _: None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> str:
        pieces: list[str] = []
        for piece in self.engine.stream(
            prompt, self.max_reply_tokens, self.temperature, should_stop
        ):
            pieces.append(piece)
            on_piece(piece)
        self.usage.prompt_tokens += len(prompt)
        self.usage.reply_tokens += len(pieces)
        return "".join(pieces).strip()
