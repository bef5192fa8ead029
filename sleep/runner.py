"""The sleep runner: N1 → N2 → N3 → verify → wake-up, crash-safe (DESIGN.md §3, §7).

Nothing is deleted before the new expert is committed and verified. Every
stage is recorded in the ``sleeps`` table before the work that depends on it
(see ``assistant.sleep.state``), so a killed run is either started over (no
durable effect yet) or finished (the expert was verified) by the next run.
Plaintext memories exist only in this process's RAM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import AssistantError
from assistant.experts import GGUF_FILE, PEFT_DIR
from assistant.faults import crash_point
from assistant.prompting import NOTES_PER_MESSAGE, chat_prompt
from assistant.retrieval import MemoryIndex
from assistant.runtime import Runtime
from assistant.sleep import distill, probes, state
from assistant.sleep.checkpoint import PROBES, TRAINING, Checkpoints, NightState
from assistant.sleep.report import CONSOLIDATED, INTERRUPTED, KEPT, NOTHING_TO_DO, SleepReport
from assistant.sleep.verify import Thresholds, agreement, judge

# Room left after the teacher's notes for a probe question and its answer.
QUESTION_ROOM_TOKENS = 64
BATCH_SIZE = 8
# Share of the budget training may use; the rest is verification and wake-up.
TRAINING_SHARE = 0.8


class SleepInterrupted(Exception):
    """Raised inside the night when its conditions end; ``str()`` is the reason."""


SIGNAL_REASONS = {
    signal.SIGINT: "you pressed Ctrl-C",
    signal.SIGTERM: "the system asked it to stop",
}


@contextmanager
def stop_on_signals(notice: Callable[[str], None]) -> Iterator[Callable[[], str | None]]:
    """Ctrl-C or SIGTERM (a scheduler or logout stopping the job) pauses the night at its
    next check instead of killing it mid-step; a second Ctrl-C stops at once. Yields a
    ``should_stop``. Outside the main thread, where Python cannot take signals, it never
    asks to stop."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handle(signum: int, frame: object) -> None:
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(SIGNAL_REASONS[signum])
        notice("pausing at the next step; the next sleep resumes from there")

    previous = {signum: signal.signal(signum, handle) for signum in SIGNAL_REASONS}
    try:
        yield lambda: received[0] if received else None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass(frozen=True)
class SleepOptions:
    budget_minutes: float | None = None  # None: the config's
    backend: str = "auto"
    device: str = "auto"
    seed: int = 0
    # Asked between units of work; a reason (str) stops the night, None goes on.
    should_stop: Callable[[], str | None] = lambda: None


Progress = Callable[[str], None]


class SleepRunner:
    def __init__(
        self, runtime: Runtime, options: SleepOptions = SleepOptions(), progress: Progress = print
    ) -> None:
        self.runtime = runtime
        self.options = options
        self.progress = progress
        self.log = state.SleepLog(runtime.database)
        self.checkpoints = Checkpoints(
            runtime.paths.checkpoints_dir, runtime.database, runtime.memory
        )
        self.experts_dir = runtime.paths.experts_dir

    # -- the whole night ---------------------------------------------------------
    def run(self) -> SleepReport:
        """One sleep (or the completion or resumption of an interrupted one). Raises
        SleepBusyError if another sleep holds the lock."""
        self.experts_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with state.SleepLock(self.runtime.paths.sleep_lock):
            self.runtime.experts.finish_removals()
            finished, paused = self._recover()
            self._remove_orphans()
            self.checkpoints.remove_unreferenced()
            if finished is not None:
                return finished
            return self._sleep(self._resumable(paused) if paused else None)

    def _sleep(self, resumed: tuple[state.SleepRow, NightState] | None) -> SleepReport:
        store, config = self.runtime.memory, self.runtime.config
        budget = self.options.budget_minutes
        budget = config.sleep_budget_minutes if budget is None else budget
        started = time.monotonic()
        if resumed:
            row, night_state = resumed
            sleep_id, epochs = row.id, row.epochs
            report = SleepReport.from_json(night_state.report)
            self.log.advance(sleep_id, state.LEARNING, outcome=None, finished_at=None)
            self.progress(
                f"resuming sleep {sleep_id}: {night_state.stage}, step {night_state.step}"
            )
        else:
            sleep_id = self.log.start()
            report = SleepReport(sleep_id)
            with self.stage(report, "N1 transition"):
                store.seal_epoch()
                epochs = store.sealed_epochs()
                self.log.advance(sleep_id, state.LEARNING, epochs=epochs)
        turns = store.unconsolidated(epochs)
        report.epochs, report.turns = epochs, len(turns)
        if not turns:
            report.outcome = NOTHING_TO_DO
            return self._finish_without_commit(report)
        night = Night(
            self,
            report,
            turns,
            deadline=started + budget * 60 * TRAINING_SHARE,
            resumed=resumed[1] if resumed else None,
        )
        try:
            expert_dir, held_out = night.learn()
        except SleepInterrupted as stop:
            report.outcome, report.reason = INTERRUPTED, str(stop)
            report.resumable = night.checkpointed
            return self._finish_without_commit(
                report, state.PAUSED if night.checkpointed else state.DONE
            )
        self.checkpoints.discard(sleep_id)
        if expert_dir is None:
            report.outcome = KEPT
            return self._finish_without_commit(report)
        crash_point("files-written")
        self.log.advance(
            sleep_id,
            state.VERIFIED,
            report=store.seal(f"sleep-report:{sleep_id}", report.to_json()),
            probes=store.seal(f"sleep-probes:{sleep_id}", json.dumps(held_out).encode()),
        )
        crash_point("verified")
        return self._wake(sleep_id)

    # -- stages ------------------------------------------------------------------
    @contextmanager
    def stage(self, report: SleepReport, name: str) -> Iterator[None]:
        self.progress(name)
        began = time.monotonic()
        try:
            yield
        finally:
            report.stage_seconds[name] = round(
                report.stage_seconds.get(name, 0.0) + time.monotonic() - began, 3
            )

    def _finish_without_commit(self, report: SleepReport, stage: str = state.DONE) -> SleepReport:
        self.log.advance(
            report.sleep_id,
            stage,
            outcome=report.outcome,
            report=self.runtime.memory.seal(f"sleep-report:{report.sleep_id}", report.to_json()),
        )
        return report

    def _wake(self, sleep_id: int) -> SleepReport:
        """Commit the verified expert (if not yet), shred the consolidated epochs, report."""
        store = self.runtime.memory
        row = self.log.get(sleep_id)
        report = SleepReport.from_json(store.unseal(f"sleep-report:{sleep_id}", row.report))
        with self.stage(report, "wake-up"):
            if row.stage == state.VERIFIED:
                self._commit(row, report)
            self.log.advance(sleep_id, state.SHREDDING)
            for epoch_id in row.epochs:
                store.delete_epoch(epoch_id)
                crash_point("shredding")
        report.outcome = CONSOLIDATED
        self.log.advance(
            sleep_id,
            state.DONE,
            outcome=CONSOLIDATED,
            report=store.seal(f"sleep-report:{sleep_id}", report.to_json()),
            probes=None,
        )
        return report

    def _commit(self, row: state.SleepRow, report: SleepReport) -> None:
        """The expert's registry row, its probe set and the stage change: one transaction."""
        store, database = self.runtime.memory, self.runtime.database
        model = self.runtime.require_model()
        held_out = store.unseal(f"sleep-probes:{row.id}", row.probes)
        expert_dir = self.expert_dir_of(row.id)
        rank = json.loads((expert_dir / PEFT_DIR / "adapter_config.json").read_text())["r"]
        with database.transaction():
            expert_id = self.runtime.experts.add(
                model.name,
                expert_dir,
                rank,
                sleep_id=row.id,
                created_at=state.now(),
            )
            database.execute(
                "INSERT INTO expert_probes (expert_id, sealed) VALUES (?, ?)",
                [expert_id, store.seal(f"expert-probes:{expert_id}", held_out)],
            )
            report.expert_id = expert_id
            self.log.advance(
                row.id,
                state.COMMITTED,
                expert_id=expert_id,
                report=store.seal(f"sleep-report:{row.id}", report.to_json()),
            )

    # -- crash recovery ----------------------------------------------------------------
    def expert_dir_of(self, sleep_id: int) -> Path:
        return self.experts_dir / f"night-{sleep_id}"

    def staging_dir_of(self, sleep_id: int) -> Path:
        return self.experts_dir / f".staging-{sleep_id}"

    def _recover(self) -> tuple[SleepReport | None, state.SleepRow | None]:
        """Finish a sleep killed after verification; pick a paused one, or one killed while
        learning, to resume from its checkpoint; close any other. Returns (the finished
        one's report, the one to resume)."""
        finished = paused = None
        for row in self.log.unfinished():
            if row.stage in (state.VERIFIED, state.COMMITTED, state.SHREDDING):
                self.progress(f"finishing the sleep interrupted at {row.stage!r}")
                finished = self._wake(row.id)
            elif row.stage in (state.PAUSED, state.LEARNING) and paused is None:
                paused = row  # killed while learning: resumable if it saved a checkpoint
            else:
                self._abandon(row.id)
        return finished, paused

    def _abandon(self, sleep_id: int) -> None:
        """Close a night that cannot go on; its epochs are untouched, so nothing is lost."""
        self.checkpoints.discard(sleep_id)
        self.log.advance(sleep_id, state.DONE, outcome=state.ABANDONED)

    def _resumable(self, row: state.SleepRow) -> tuple[state.SleepRow, NightState] | None:
        """The night's checkpoint, if it has a whole one made on today's model and experts."""
        night_state = self.checkpoints.load(row.id)
        if night_state is None or night_state.basis() != self.basis():
            why = "no checkpoint" if night_state is None else "the model or its experts changed"
            self.progress(f"sleep {row.id} cannot resume ({why}); starting over")
            self._abandon(row.id)
            return None
        return row, night_state

    def basis(self) -> tuple[str, list[int], int]:
        """What tonight builds on: the model, the experts learned before, the seed."""
        model = self.runtime.require_model()
        experts = [e.id for e in self.runtime.experts.active(model.name)]
        return model.name, experts, self.options.seed

    def _remove_orphans(self) -> None:
        """Delete expert directories no registry row points to (from a run killed mid-way)."""
        referenced = {
            Path(r[0]).parent.name
            for r in self.runtime.database.execute("SELECT peft_dir FROM experts")
        }
        for entry in self.experts_dir.iterdir():
            if entry.name not in referenced:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


class Night:
    """N2 + N3 + verification for one sleep: everything here lives in RAM until ``learn``
    writes the verified expert's files."""

    def __init__(
        self,
        runner: SleepRunner,
        report: SleepReport,
        turns: list,
        deadline: float,
        resumed: NightState | None = None,
    ) -> None:
        self.runner = runner
        self.runtime = runner.runtime
        self.report = report
        self.turns = turns
        self.deadline = deadline
        self.night = resumed  # the night so far; a fresh one is made in ``learn``
        self.config = self.runtime.config
        self.checkpointed = False
        self.saved_at = time.monotonic()

    def learn(self) -> tuple[Path | None, list[list[str]]]:
        """(the verified expert's directory, its held-out [question, answer] pairs) or
        (None, []) with the reason in the report. Raises SleepInterrupted after saving
        a checkpoint when the night's conditions end."""
        stage, report, options = self.runner.stage, self.report, self.runner.options
        model = self.runtime.require_model()
        learned = self.runtime.experts.active(model.name)
        night = self.night = self.night or NightState(*self.runner.basis())
        self.settings = distill.DistillSettings(
            self.config.sleep_max_answer_tokens, seed=options.seed
        )
        with stage(report, "N2 light"):
            _check_integrity(self.runtime, learned)
            chunks = self._chunks(model.gguf_path)
        with stage(report, "N3 load"):
            hf_dir = self.runtime.training_dir(model)
            backend = self.backend = _load_backend(hf_dir, learned, options, self.config.sleep_rank)
            if night.backend:
                backend.restore_training_state(night.backend)
        try:
            if night.stage == PROBES:
                with stage(report, "N3 probes"):
                    self._knowledge(backend, chunks)
                    report.notes = sum(map(len, chunks))
                    report.lessons, report.held_out = len(night.lessons), len(night.held_out)
                    night.anchors = self._anchor_lessons(backend, learned, chunks)
                    # KL to a top-k target is not zero even untrained (the mass outside the
                    # top k): verification bounds how much training adds to it.
                    night.anchor_baseline = (
                        backend.divergence(night.anchors) if night.anchors else 0.0
                    )
                    night.stage = TRAINING
            with stage(report, "N3 training"):
                loss = distill.train(
                    backend,
                    night.lessons,
                    night.anchors,
                    steps=self.config.sleep_steps,
                    learning_rate=self.config.sleep_learning_rate,
                    batch_size=BATCH_SIZE,
                    deadline=self.deadline,
                    seed=options.seed,
                    start_step=night.step,
                    on_step=self._on_step,
                )
        except SleepInterrupted:
            self._save_checkpoint()
            raise
        report.train_steps, report.train_tokens = night.step, night.train_tokens
        report.final_loss = None if loss is None else round(loss, 5)
        with stage(report, "verify"):
            checked, verdict = self._verify(
                backend, night.held_out, night.anchors, night.anchor_baseline, learned
            )
        if not verdict.passed:
            report.reason = verdict.reason
            return None, []
        with stage(report, "save"):
            expert_dir = self._save(backend, hf_dir)
        report.learned = [question for question, _ in checked][:10]
        return expert_dir, [list(pair) for pair in checked]

    def _chunks(self, gguf_path: Path) -> list[list[str]]:
        """N2: the day's notes, deduplicated, in chunks that fit the teacher's context."""
        from assistant.engine import ChatEngine

        self.engine = ChatEngine(gguf_path, n_ctx=self.config.n_ctx, n_threads=self.config.threads)
        room = self.engine.n_ctx - QUESTION_ROOM_TOKENS - self.settings.max_answer_tokens
        notes = probes.day_notes(self.turns)
        return probes.chunk_notes(notes, lambda chunk: len(self._prompt(chunk, "")) <= room)

    def _knowledge(self, backend, chunks: list[list[str]]) -> None:
        """N3 probes, chunk by chunk (where a resumed night goes on): lessons to train on,
        and (chunk, question) pairs held out to verify."""
        night = self.night
        for i, chunk in enumerate(chunks[night.chunks_done :], night.chunks_done):
            questions = [self._questions_about(backend, note) for note in chunk]
            crash_point("probes")
            chunk_probes = probes.split_probes(chunk, questions, self.runner.options.seed + i)
            examples = [self._example(chunk, q) for q in chunk_probes.train]
            night.lessons += distill.knowledge_lessons(
                backend, examples, self.engine.end_of_turn, self.settings
            )
            night.held_out += [(chunk, q) for q in chunk_probes.held_out]
            night.chunks_done = i + 1
            self._save_checkpoint_if_due()

    def _check_stop(self) -> None:
        reason = self.runner.options.should_stop()
        if reason:
            raise SleepInterrupted(reason)

    def _questions_about(self, backend, note: str) -> list[str]:
        """Questions the model itself writes about one note (SEAL-style self-generated probes)."""
        self._check_stop()
        request = self._messages_tokens(probes.questions_request(note))
        listing = backend.generate(request, self.settings.max_answer_tokens)
        return probes.parse_questions(self.engine.detokenize(listing))

    # -- prompts ------------------------------------------------------------------
    def _messages_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        return self.engine.tokenize(self.engine.render(messages))

    def _prompt(self, notes: list[str], question: str) -> list[int]:
        """The chat layout: with notes, the reply is begun for the model as chat begins it."""
        prompt = chat_prompt(notes, [], question)
        return self.engine.tokenize(self.engine.render(prompt.messages) + prompt.reply_prefix)

    def _example(self, notes: list[str], question: str) -> distill.Example:
        return distill.Example(self._prompt(notes, question), self._prompt([], question))

    def _answer(self, backend, prompt: list[int], *, student: bool) -> str:
        tokens = backend.generate(prompt, self.settings.max_answer_tokens, student=student)
        return self.engine.detokenize(tokens).strip()

    def _on_step(self, step: int, loss: float, tokens: int) -> None:
        self.night.step = step
        self.night.train_tokens += tokens
        self._save_checkpoint_if_due()
        crash_point("training")
        steps = self.config.sleep_steps
        if step % 10 == 0 or step == steps:
            self.runner.progress(f"N3 training: step {step}/{steps}, loss {loss:.4f}")
        self._check_stop()

    def _save_checkpoint(self) -> None:
        night = self.night
        night.backend, night.report = self.backend.training_state(), self.report.to_json()
        self.runner.checkpoints.save(self.report.sleep_id, night)
        self.checkpointed, self.saved_at = True, time.monotonic()

    def _save_checkpoint_if_due(self) -> None:
        """Every ``sleep_checkpoint_minutes``, so a night killed outright (out of memory, a
        crash) loses at most that much work."""
        if time.monotonic() - self.saved_at >= self.config.sleep_checkpoint_minutes * 60:
            self._save_checkpoint()

    # -- anchors and verification ---------------------------------------------------------
    def _earlier_probes(self, learned) -> list[list[str]]:
        """[question, answer] pairs kept sealed for each earlier expert."""
        store, pairs = self.runtime.memory, []
        for expert in learned:
            row = self.runtime.database.execute(
                "SELECT sealed FROM expert_probes WHERE expert_id = ?", [expert.id]
            ).fetchone()
            if row:
                pairs += json.loads(store.unseal(f"expert-probes:{expert.id}", row[0]))
        return pairs

    def _anchor_lessons(self, backend, learned, chunks: list[list[str]]) -> list:
        """Prompts the day says nothing about, the model before tonight as their target.

        A candidate (small talk, a stock personal question, an earlier night's question)
        for which chat would retrieve one of today's notes is about today, so it is not
        an anchor; for the others chat shows no note, and their answers must not move.
        """
        today = MemoryIndex(note for chunk in chunks for note in chunk)
        questions = [*distill.ANCHOR_PROMPTS, *(q for q, _ in self._earlier_probes(learned))]
        examples, answers = [], []
        for question in dict.fromkeys(questions):
            if today.select(question, NOTES_PER_MESSAGE):
                continue
            example = self._example([], question)
            examples.append(example)
            answers.append(
                backend.generate(example.student_prompt, self.settings.max_answer_tokens)
            )
        return distill.lessons_for(
            backend,
            examples,
            answers,
            self.engine.end_of_turn,
            self.settings.top_k,
            teacher_sees_notes=False,
        )

    def _verify(self, backend, held_out, anchors, anchor_baseline: float, learned):
        """Closed-book answers to held-out questions must match the teacher's in-context ones."""
        checked = []
        for notes, question in held_out:
            taught = self._answer(backend, self._prompt(notes, question), student=False)
            before = self._answer(backend, self._prompt([], question), student=False)
            if taught != before:  # only questions the notes change say anything about learning
                checked.append((question, taught))
        answers = [self._answer(backend, self._prompt([], q), student=True) for q, _ in checked]
        recall = agreement(answers, [a for _, a in checked])
        self.report.checked = len(checked)
        earlier = self._earlier_probes(learned)
        retention = agreement(
            [self._answer(backend, self._prompt([], q), student=True) for q, _ in earlier],
            [a for _, a in earlier],
        )
        divergence = backend.divergence(anchors) - anchor_baseline if anchors else 0.0
        report = self.report
        report.recall = None if recall is None else round(recall, 4)
        report.retention = None if retention is None else round(retention, 4)
        report.anchor_divergence = round(divergence, 5)
        thresholds = Thresholds(
            self.config.sleep_min_recall,
            self.config.sleep_min_retention,
            self.config.sleep_max_anchor_divergence,
        )
        return checked, judge(recall, retention, divergence, thresholds)

    def _save(self, backend, hf_dir: Path) -> Path:
        """PEFT + GGUF into a staging directory, then renamed into place in one step."""
        from assistant.models.hf_weights import read_config
        from assistant.models.lora_gguf import write_gguf_lora

        runner, sleep_id = self.runner, self.report.sleep_id
        staging = runner.staging_dir_of(sleep_id)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700)
        backend.save_expert(staging / PEFT_DIR)
        write_gguf_lora(staging / PEFT_DIR, read_config(hf_dir), staging / GGUF_FILE)
        final = runner.expert_dir_of(sleep_id)
        os.replace(staging, final)
        return final


def _check_integrity(runtime: Runtime, learned) -> None:
    (result,) = runtime.database.execute("PRAGMA quick_check").fetchone()
    if result != "ok":
        raise AssistantError(
            f"The memory database failed its integrity check ({result}); nothing was changed.",
            hint="Restore the data directory from a backup.",
        )
    for expert in learned:
        if (
            not (expert.peft_dir / "adapter_config.json").is_file()
            or not expert.gguf_path.is_file()
        ):
            raise AssistantError(
                f"The files of expert {expert.id} are missing or incomplete; nothing was changed.",
                hint="Restore the data directory from a backup.",
            )


def _load_backend(hf_dir: Path, learned, options: SleepOptions, rank: int):
    from assistant.backends.protocol import LearnedExpert, NewExpert

    if options.backend not in ("auto", "torch"):
        raise AssistantError(
            f"Unknown training backend {options.backend!r}.", hint="Use auto or torch."
        )
    from assistant.backends.torch_backend import TorchBackend

    return TorchBackend(
        hf_dir,
        [LearnedExpert(e.peft_dir, e.scale) for e in learned],
        NewExpert(rank=rank, alpha=2.0 * rank, seed=options.seed),
        device=options.device,
    )
