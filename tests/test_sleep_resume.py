"""A sleep stopped by its conditions checkpoints, and the next run resumes it exactly.

The pieces (the sealed checkpoint, the step-addressed batch order, the
backend's training state) are checked on their own; then a whole night is cut
by unplugging a fabricated charger mid-training, resumed by `sleep auto`, and
its expert compared with an uninterrupted twin's. Those nights are short nights
of the starter model, with the verification gates open: the subject here is
the machinery.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from assistant.backends.protocol import Lesson, NewExpert, TopK
from assistant.cli import cli
from assistant.config import Config
from assistant.sleep import lessons as night_lessons
from assistant.sleep.checkpoint import TRAINING, Checkpoints, NightState, decode, encode
from assistant.sleep.probes import Probe
from assistant.sleep.recipe import Recipe
from assistant.sleep.state import SleepLog
from tests import nights
from tests.conftest import MLX_NIGHTS
from tests.test_backend_torch import CONTINUATIONS, PREFIX

CANARY = "Zorblax-4417"


def _lessons(rng: np.random.Generator, count: int, k: int = 4) -> list[Lesson]:
    lessons = []
    for _ in range(count):
        answer = rng.integers(0, 400, rng.integers(1, 6)).tolist()
        targets = TopK(
            rng.integers(0, 400, (len(answer), k)),
            np.log(rng.dirichlet(np.ones(k), len(answer))).astype(np.float32),
        )
        lessons.append(Lesson(rng.integers(0, 400, rng.integers(2, 9)).tolist(), answer, targets))
    return lessons


def _same_lessons(a: list[Lesson], b: list[Lesson]) -> bool:
    return len(a) == len(b) and all(
        x.prompt == y.prompt
        and x.answer == y.answer
        and np.array_equal(x.targets.token_ids, y.targets.token_ids)
        and np.array_equal(x.targets.logprobs, y.targets.logprobs)
        for x, y in zip(a, b, strict=True)
    )


def _night(rng: np.random.Generator) -> NightState:
    told = f"My goldfish is called {CANARY}."
    return NightState(
        model="tiny",
        experts=[3, 5],
        seed=3,
        backend_name="mlx",
        stage=TRAINING,
        notes_done=2,
        asked=9,
        probes=[Probe("Who is it?", told, f"It is {CANARY}.", ("zorblax", "4417"))],
        held_out=[Probe("What is my goldfish called?", told, CANARY, ("zorblax", "4417"))],
        unprobed=["From now on, I'd like short answers."],
        held_out_negatives=["What is my dog called?"],
        changed=["Where do I live?"],
        lessons=_lessons(rng, 7),
        samples=_lessons(rng, 2),
        negative_lessons=_lessons(rng, 2),
        anchors=_lessons(rng, 3),
        anchor_baseline=0.25,
        step=4,
        train_tokens=321,
        report=b'{"sleep_id": 1}',
        backend=rng.bytes(1000),
    )


def test_a_night_state_round_trips_through_its_encoding() -> None:
    night = _night(np.random.default_rng(0))
    again = decode(encode(night))
    for pool in ("lessons", "samples", "negative_lessons", "anchors"):
        assert _same_lessons(getattr(again, pool), getattr(night, pool)), pool
    for name in (
        "model",
        "experts",
        "seed",
        "backend_name",
        "stage",
        "notes_done",
        "asked",
        "probes",
        "held_out",
        "unprobed",
        "held_out_negatives",
        "changed",
        "anchor_baseline",
    ):
        assert getattr(again, name) == getattr(night, name), name
    assert (again.step, again.train_tokens, again.report, again.backend) == (
        night.step,
        night.train_tokens,
        night.report,
        night.backend,
    )
    assert decode(encode(NightState("m", []))).lessons == []


def test_a_checkpoint_from_before_backends_were_recorded_counts_as_torchs() -> None:
    arrays = dict(np.load(io.BytesIO(encode(NightState("m", [], backend_name="mlx")))))
    meta = json.loads(arrays["meta"].tobytes())
    del meta["backend_name"]  # what a version without MLX wrote
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    older = io.BytesIO()
    np.savez(older, **arrays)
    assert decode(older.getvalue()).backend_name == "torch"


def test_a_checkpoint_is_sealed_replaced_atomically_and_shredded_with_its_key(runtime) -> None:
    directory = runtime.paths.checkpoints_dir
    checkpoints = Checkpoints(directory, runtime.database, runtime.memory)
    sleep_id = SleepLog(runtime.database, runtime.memory).start()
    assert checkpoints.load(sleep_id) is None
    night = _night(np.random.default_rng(1))
    checkpoints.save(sleep_id, night)
    night.step = 5
    checkpoints.save(sleep_id, night)  # a second save replaces the first file
    (only,) = directory.iterdir()
    assert CANARY.encode() not in only.read_bytes() and (only.stat().st_mode & 0o777) == 0o600
    assert checkpoints.load(sleep_id).step == 5

    (directory / "sleep-9-stray.checkpoint").write_bytes(b"left by a killed save")
    checkpoints.remove_unreferenced()
    assert list(directory.iterdir()) == [only]

    sealed = bytearray(only.read_bytes())
    sealed[-1] ^= 1
    only.write_bytes(bytes(sealed))
    assert checkpoints.load(sleep_id) is None  # tampered or torn: no checkpoint, start over
    checkpoints.save(sleep_id, night)  # saving again replaces the torn file
    assert len(list(directory.iterdir())) == 1 and checkpoints.load(sleep_id).step == 5
    runtime.database.execute("UPDATE sleeps SET checkpoint = ?", [b"not a sealed pointer" * 3])
    assert checkpoints.load(sleep_id) is None
    checkpoints.remove_unreferenced()  # a file its row cannot name is unreadable: removed
    assert list(directory.iterdir()) == []

    checkpoints.discard(sleep_id)
    assert list(directory.iterdir()) == []
    row = runtime.database.execute("SELECT checkpoint FROM sleeps").fetchone()
    assert row == (None,)


def _recipe(seed: int, **settings) -> Recipe:
    return Recipe.of(Config(**settings), seed)


def test_the_batch_order_is_a_function_of_seed_and_step() -> None:
    recipe = _recipe(7)
    rng = np.random.default_rng(0)
    pools = night_lessons.Pools(  # every pool larger than the count a batch takes from it
        _lessons(rng, 13),
        _lessons(rng, recipe.samples_per_batch + 1),
        _lessons(rng, recipe.negatives_per_batch + 1),
        _lessons(rng, recipe.anchors_per_batch + 3),
    )
    facts = {id(lesson): i for i, lesson in enumerate(pools.facts)}

    def run(seed: int) -> list[list[int]]:
        seeded = dataclasses.replace(recipe, seed=seed)
        return [
            [id(lesson) for lesson in night_lessons.batch_at(step, pools, seeded)]
            for step in range(10)
        ]

    assert run(7) == run(7) and run(7) != run(8)
    stream = [facts[i] for step in run(7) for i in step if i in facts]
    for start in range(0, len(stream) - 13 + 1, 13):  # each pass has every fact lesson once
        assert sorted(stream[start : start + 13]) == list(range(13))
    extras = recipe.samples_per_batch + recipe.negatives_per_batch + recipe.anchors_per_batch
    assert all(len(step) == recipe.facts_per_batch + extras for step in run(7))


def _continuation_lessons(backend) -> list[Lesson]:
    targets = backend.teacher_topk(PREFIX, CONTINUATIONS, k=8)
    pairs = zip(CONTINUATIONS, targets, strict=True)
    return [Lesson([1, *c.prompt], c.answer, t) for c, t in pairs]


@pytest.mark.parametrize("backend_name", ["torch", "mlx"])
def test_training_resumed_from_its_state_equals_training_straight_through(
    tiny_llama, backend_name: str
) -> None:
    from assistant.backends.choice import load_backend

    if backend_name == "mlx":
        pytest.importorskip("mlx_lm")

    def backend():
        return load_backend(backend_name, tiny_llama, [], NewExpert(rank=4, alpha=8, seed=2), "cpu")

    straight = backend()
    targets = straight.teacher_topk(PREFIX, CONTINUATIONS, k=8)
    facts = [
        Lesson([1, *p.prompt], p.answer, t) for p, t in zip(CONTINUATIONS, targets, strict=True)
    ]
    pools = night_lessons.Pools(facts, [], facts[:1], facts[1:])
    recipe = _recipe(4, sleep_steps=6, sleep_learning_rate=3e-2, sleep_evaluate_every=2)

    def train(model, start: int = 0, stop_at: int | None = None) -> None:
        def on_step(step: int, loss: float, tokens: int) -> None:
            if step == stop_at:
                raise StopIteration  # anything raised after a step stops training there

        with contextlib.suppress(StopIteration):
            night_lessons.train(
                model, pools, recipe, float("inf"), start_step=start, on_step=on_step
            )

    train(straight)
    first = backend()
    train(first, stop_at=3)
    resumed = backend()
    resumed.restore_training_state(first.training_state())
    train(resumed, start=3)
    ours, theirs = resumed.export_expert().tensors(), straight.export_expert().tensors()
    assert ours.keys() == theirs.keys()
    for name, weight in theirs.items():
        assert np.allclose(ours[name], weight, atol=1e-7), name
    halfway = first.export_expert().tensors()
    assert any(not np.allclose(halfway[n], w) for n, w in theirs.items())


def test_training_stops_when_the_evaluation_says_it_has_learned(tiny_llama) -> None:
    from assistant.backends.torch_backend import TorchBackend

    model = TorchBackend(tiny_llama, [], NewExpert(rank=4, alpha=8, seed=2), "cpu")
    targets = model.teacher_topk(PREFIX, CONTINUATIONS, k=8)
    facts = [
        Lesson([1, *p.prompt], p.answer, t) for p, t in zip(CONTINUATIONS, targets, strict=True)
    ]
    recipe = _recipe(0, sleep_steps=50, sleep_learning_rate=1e-2, sleep_evaluate_every=4)
    asked: list[int] = []

    def evaluate(step: int) -> bool:
        asked.append(step)
        return step >= 8

    steps, loss = night_lessons.train(
        model, night_lessons.Pools(facts, [], [], []), recipe, float("inf"), evaluate=evaluate
    )
    assert (steps, asked) == (8, [4, 8]) and loss is not None


def test_training_stops_when_held_out_recall_has_not_improved_for_its_patience() -> None:
    from assistant.sleep.seeding import training_is_done

    settings = _recipe(
        0,
        sleep_steps=300,
        sleep_evaluate_every=20,
        sleep_stop_recall=0.95,
        sleep_patience=2,
        sleep_max_anchor_divergence=0.1,
    )
    # Seed 0 of bench/night.py: best 0.89 at step 40, no better at 60 or 80.
    assert not training_is_done(settings, 60, 0.67, 0.07, best_step=40)
    assert training_is_done(settings, 80, 0.89, 0.04, best_step=40)
    assert training_is_done(settings, 20, 0.95, 0.0, best_step=20)  # learned
    assert training_is_done(settings, 20, 0.5, 0.31, best_step=20)  # the anchors run away
    patient = dataclasses.replace(settings, patience=0)
    assert not training_is_done(patient, 280, 0.5, 0.0, best_step=20)


def test_the_expert_kept_is_the_best_one_verification_could_pass() -> None:
    from assistant.sleep.seeding import check_score

    # Seed 0 of bench/night.py: 0.89 at step 40 with the anchors at 0.11, past the 0.1 limit;
    # 0.83 at step 60 with them at 0.07. Step 60's expert is the better one to keep.
    assert check_score(0.83, 0.07, 0.1) > check_score(0.89, 0.11, 0.1)
    assert check_score(0.89, 0.05, 0.1) > check_score(0.83, 0.07, 0.1)


# -- a whole night, unplugged and resumed --------------------------------------------------
CHARGER_SETTINGS = {
    **nights.GATES_OPEN,
    "sleep_window": "00:00-00:00",  # all day
    "sleep_min_idle_minutes": 0,
    "sleep_min_turns": 1,
    "sleep_check_seconds": 0,  # read the (fake) charger at every step
    "sleep_steps": 8,
    "sleep_evaluate_every": 4,
}


def _charger(root: Path, online: bool) -> None:
    supply = root / "AC"
    supply.mkdir(parents=True, exist_ok=True)
    (supply / "type").write_text("Mains\n")
    (supply / "online").write_text("1\n" if online else "0\n")


def _expert_weights(home: Path) -> dict[str, np.ndarray]:
    from assistant.runtime import Runtime

    runtime = Runtime()
    (expert,) = runtime.experts.active(runtime.require_model().name)
    weights = runtime.experts.open(runtime.memory, expert).adapter().tensors()
    runtime.database.close()
    return weights


def _cli_ok(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _tell_two_facts(home: Path, settings: dict, twin: Path) -> None:
    """Configure, tell two facts, and copy the home to ``twin`` for an uninterrupted run."""
    nights.configure(home, settings)
    for message in (f"My goldfish is called {CANARY}.", "My sister lives in Lisbon."):
        _cli_ok("chat", "--once", message)
    nights.copy_home(home, twin)


def _tell_and_unplug_mid_sleep(home: Path, tmp_path: Path, cut_at: str, backend: str = "auto"):
    """Tell two facts, then start `sleep auto` (training with ``backend``) and unplug the fake
    charger when the runner reports ``cut_at``. Returns the sensors, with the charger still
    unplugged."""
    from assistant.runtime import Runtime
    from assistant.sleep.trigger.auto import sleep_if_due
    from assistant.sleep.trigger.policy import Sensors
    from assistant.sleep.trigger.sensors import Reading, read_power

    settings = {**CHARGER_SETTINGS, "sleep_backend": backend}
    _tell_two_facts(home, settings, tmp_path / "twin")
    power = tmp_path / "power_supply"
    _charger(power, online=True)
    sensors = Sensors(
        power=lambda: read_power("linux", power),
        idle=lambda: Reading(None, "test", "no OS idle source"),
    )

    def unplug(line: str) -> None:  # the runner's progress lines say where the night is
        if line.startswith(cut_at):
            _charger(power, online=False)

    line = sleep_if_due(Runtime(), sensors, unplug)
    assert line == "sleep 1: interrupted (the power was unplugged)"
    with nights.db(home) as conn:
        assert conn.execute("SELECT stage, outcome FROM sleeps").fetchall() == [
            ("paused", "interrupted")
        ]
        assert conn.execute("SELECT count(*) FROM experts").fetchone() == (0,)
    return sensors, lambda: _charger(power, online=True)


@pytest.mark.slow
@pytest.mark.usefixtures("starter_training_copy")
@pytest.mark.parametrize("backend", ["torch", pytest.param("mlx", marks=MLX_NIGHTS)])
def test_unplugging_mid_sleep_pauses_and_the_next_auto_sleep_resumes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    from assistant.runtime import Runtime
    from assistant.sleep.trigger.auto import sleep_if_due

    twin = tmp_path / "twin"
    # Unplugged as the held-out check after step 4 reports: the night stops after step 5.
    sensors, plug_in = _tell_and_unplug_mid_sleep(
        home, tmp_path, "N3 training: step 4, held-out", backend
    )
    runtime = Runtime()
    paused = Checkpoints(runtime.paths.checkpoints_dir, runtime.database, runtime.memory).load(1)
    assert (paused.stage, paused.step) == (TRAINING, 5)  # stopped where it was unplugged
    status = json.loads(_cli_ok("sleep", "status", "--json"))
    assert status["last"]["resumable"] and status["pending_turns"] == 4
    assert [p for p in home.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()] == []

    # Unplugged, `sleep auto` waits; a message told meanwhile belongs to the next night.
    assert sleep_if_due(Runtime(), sensors).startswith("not sleeping: power")
    _cli_ok("chat", "--once", "My bike is red.")
    plug_in()
    assert sleep_if_due(Runtime(), sensors) == "sleep 1: consolidated"

    monkeypatch.setenv("ASSISTANT_HOME", str(twin))
    uninterrupted = json.loads(_cli_ok("sleep", "--now", "--json"))
    monkeypatch.setenv("ASSISTANT_HOME", str(home))
    resumed = json.loads(_cli_ok("sleep", "status", "--json"))["last"]
    assert resumed["outcome"] == uninterrupted["outcome"] == "consolidated"
    assert resumed["backend"] == uninterrupted["backend"] == f"{backend}/cpu"
    for field in ("turns", "probes", "held_out", "train_steps", "train_tokens", "recall"):
        assert resumed[field] == uninterrupted[field], field
    assert resumed["train_steps"] == CHARGER_SETTINGS["sleep_steps"]  # no step twice

    ours, theirs = _expert_weights(home), _expert_weights(twin)
    assert ours.keys() == theirs.keys()
    for name, weight in ours.items():
        assert np.allclose(weight, theirs[name], atol=1e-6), name
    assert max(np.abs(w).max() for n, w in ours.items() if "lora_B" in n) > 0  # it trained
    with nights.db(home) as conn:  # one night, one expert; the new message still waits
        assert conn.execute("SELECT id, stage, outcome FROM sleeps").fetchall() == [
            (1, "done", "consolidated")
        ]
        assert conn.execute("SELECT sleep_id FROM experts").fetchall() == [(1,)]
        assert conn.execute("SELECT count(*) FROM turns").fetchone() == (2,)
        assert conn.execute("SELECT checkpoint FROM sleeps").fetchone() == (None,)
    assert list((home / "data" / "checkpoints").iterdir()) == []


@pytest.mark.slow
@pytest.mark.usefixtures("starter_training_copy")
def test_a_checkpoint_on_other_experts_is_dropped_and_the_night_starts_over(
    home: Path, tmp_path: Path
) -> None:
    from tests.tiny_models import build_lora

    model_home = home
    _tell_and_unplug_mid_sleep(model_home, tmp_path, "N3 probes")
    with nights.db(model_home) as conn:
        (training_copy,) = conn.execute("SELECT hf_dir FROM models").fetchone()
    adapter = build_lora(Path(training_copy), tmp_path / "adapter", rank=4, alpha=8, seed=5)
    _cli_ok("adapters", "import", str(adapter))
    result = CliRunner().invoke(cli, ["sleep", "--now", "--json"])
    assert result.exit_code == 0, result.output
    assert "sleep 1 cannot resume (the model or its experts changed)" in result.stderr
    assert json.loads(result.stdout)["outcome"] == "consolidated"
    with nights.db(model_home) as conn:
        assert conn.execute("SELECT id, stage, outcome FROM sleeps").fetchall() == [
            (1, "done", "abandoned"),
            (2, "done", "consolidated"),
        ]
        assert conn.execute("SELECT count(*) FROM turns").fetchone() == (0,)
    assert list((model_home / "data" / "checkpoints").iterdir()) == []


@pytest.mark.slow
@pytest.mark.usefixtures("starter_training_copy")
def test_ctrl_c_pauses_a_sleep_now_instead_of_killing_it(home: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    model_home = home
    nights.configure(model_home, {"sleep_steps": 100_000})
    CliRunner().invoke(cli, ["chat", "--once", f"My goldfish is called {CANARY}."])
    process = subprocess.Popen(
        [sys.executable, "-m", "assistant", "sleep", "--now", "--json"],
        env={**os.environ, "ASSISTANT_HOME": str(model_home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with nights.db(model_home) as conn:
            while conn.execute("SELECT stage FROM sleeps").fetchall() != [("learning",)]:
                assert process.poll() is None, process.stderr.read()
                time.sleep(0.2)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "pausing at the next step" in stderr
    report = json.loads(stdout)
    assert (report["outcome"], report["reason"], report["resumable"]) == (
        "interrupted",
        "you pressed Ctrl-C",
        True,
    )
    with nights.db(model_home) as conn:
        assert conn.execute("SELECT stage FROM sleeps").fetchall() == [("paused",)]
        assert conn.execute("SELECT count(*) FROM turns").fetchone() == (2,)


@pytest.mark.slow
@pytest.mark.usefixtures("starter_training_copy")
def test_a_night_killed_outright_resumes_from_its_last_periodic_checkpoint(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess
    import sys

    from assistant.faults import CRASH_ENV

    model_home, twin = home, tmp_path / "twin"
    settings = {**CHARGER_SETTINGS, "sleep_checkpoint_minutes": 0}  # a checkpoint every step
    _tell_two_facts(model_home, settings, twin)
    killed = subprocess.run(
        [sys.executable, "-m", "assistant", "sleep", "--now"],
        env={**os.environ, "ASSISTANT_HOME": str(model_home), CRASH_ENV: "training"},
        capture_output=True,
        timeout=600,
    )
    assert killed.returncode == -9  # SIGKILL after the first step's checkpoint

    result = CliRunner().invoke(cli, ["sleep", "--now", "--json"])
    assert result.exit_code == 0, result.output
    assert "resuming sleep 1: training, step 1" in result.stderr
    assert json.loads(result.stdout)["outcome"] == "consolidated"
    monkeypatch.setenv("ASSISTANT_HOME", str(twin))
    _cli_ok("sleep", "--now")
    ours, theirs = _expert_weights(model_home), _expert_weights(twin)
    for name, weight in ours.items():
        assert np.allclose(weight, theirs[name], atol=1e-6), name
    with nights.db(model_home) as conn:
        assert conn.execute("SELECT id, stage, outcome FROM sleeps").fetchall() == [
            (1, "done", "consolidated")
        ]
    assert list((model_home / "data" / "checkpoints").iterdir()) == []


def test_a_night_paused_under_another_backend_keeps_its_probes_and_retrains(
    model_home: Path,
) -> None:
    from assistant.runtime import Runtime

    nights.configure(model_home, nights.SHORT_NIGHT)
    runtime = Runtime()  # told straight to the memory: the tiny model's replies take long
    conversation = runtime.memory.new_conversation()
    for message in (f"My goldfish is called {CANARY}.", "My sister lives in Lisbon."):
        runtime.memory.append(conversation, "user", message)
        runtime.memory.append(conversation, "assistant", "Noted.")
    runtime.database.close()
    # Out of budget at once: the night pauses in N3 with a checkpoint made under torch.
    paused = json.loads(
        _cli_ok("sleep", "--now", "--json", "--backend", "torch", "--budget-minutes", "0")
    )
    assert (paused["outcome"], paused["resumable"], paused["backend"]) == (
        "interrupted",
        True,
        "torch/cpu",
    )
    status = _cli_ok("sleep", "status")
    assert "(under torch; another backend restarts its training)" in status
    assert "interrupted (backend torch/cpu)" in status
    runtime = Runtime()
    checkpoints = Checkpoints(runtime.paths.checkpoints_dir, runtime.database, runtime.memory)
    night = checkpoints.load(1)
    assert night.backend_name == "torch"
    # As if MLX had paused it mid-training: its training state is in MLX's format.
    night.backend_name, night.step, night.backend, night.best = "mlx", 3, b"MLX's", b"MLX's"
    checkpoints.save(1, night)
    runtime.database.close()

    result = CliRunner().invoke(
        cli, ["sleep", "--now", "--json", "--backend", "torch", "--budget-minutes", "0"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "sleep 1 was paused under mlx and this run trains with torch: its probes are kept,"
        " its training starts over" in result.stderr
    )
    assert "resuming sleep 1" in result.stderr
    assert json.loads(result.stdout)["sleep_id"] == 1
    runtime = Runtime()
    resumed = Checkpoints(runtime.paths.checkpoints_dir, runtime.database, runtime.memory).load(1)
    runtime.database.close()
    assert (resumed.backend_name, resumed.step, resumed.best) == ("torch", 0, b"")
    assert resumed.backend.startswith(b"PK")  # torch's own fresh state (a zip), saved at pause
    assert (resumed.probes, resumed.held_out, resumed.notes_done) == (
        night.probes,
        night.held_out,
        night.notes_done,
    )
    with nights.db(model_home) as conn:
        assert conn.execute("SELECT id, stage, outcome FROM sleeps").fetchall() == [
            (1, "paused", "interrupted")
        ]
        assert conn.execute("SELECT count(*) FROM turns").fetchone() == (4,)  # nothing lost
