"""The ``assistant`` command. Heavy libraries are imported inside commands so --help is instant."""

from __future__ import annotations

import json
import sys

import click

from assistant.errors import AssistantError


class _UserError(click.ClickException):
    """Shows an AssistantError as 'Error: ...' plus its hint, exit status 1."""

    def __init__(self, error: AssistantError) -> None:
        super().__init__(str(error))
        self.hint = error.hint

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)
        if self.hint:
            click.echo(f"Hint: {self.hint}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AssistantError as error:
            raise _UserError(error) from None


def _prompt_passphrase(new: bool) -> str:
    label = "Choose a passphrase for your memory" if new else "Passphrase"
    return click.prompt(label, hide_input=True, confirmation_prompt=new)


def _runtime():
    from assistant.runtime import Runtime

    return Runtime(
        passphrase_prompt=_prompt_passphrase if sys.stdin.isatty() else None,
        notice=lambda line: click.echo(line, err=True),
    )


@click.group(cls=_Group, invoke_without_command=True)
@click.version_option(package_name="sleeping-assistant")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """An on-device personal assistant that learns while it sleeps.

    With no command, opens the chat.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(chat)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def paths(as_json: bool) -> None:
    """Show where data, config, cache, models and the key file live."""
    from assistant.paths import Paths

    described = Paths.discover().describe()
    if as_json:
        click.echo(json.dumps(described, indent=2))
    else:
        for name, where in described.items():
            click.echo(f"{name:>22}: {where}")


@cli.command()
@click.option(
    "--passphrase", "source", flag_value="passphrase", help="Derive the key from a passphrase."
)
@click.option("--keyring", "source", flag_value="keyring", help="Keep the key in the OS keychain.")
@click.option(
    "--key-file",
    "source",
    flag_value="keyfile",
    help="Keep the key in a 0600 file (weaker: anyone who reads it reads your memory).",
)
def init(source: str | None) -> None:
    """Create the key that encrypts your memory (chosen automatically if you skip this)."""
    from assistant.store.keys import choose_default_source, initialize

    runtime = _runtime()
    source = source or choose_default_source(runtime.passphrase_prompt is not None)
    if source == "keyfile":
        click.echo(
            "Warning: with a key file, anyone who can read "
            f"{runtime.paths.key_file} can read your memory.",
            err=True,
        )
        click.confirm("Keep the key in a file anyway?", abort=True)
    initialize(runtime.database, runtime.paths.key_file, source, runtime.passphrase_prompt)
    click.echo(f"Memory key created ({source}).")


@cli.group(cls=_Group)
def key() -> None:
    """The key that encrypts your memory."""


@key.command("rotate")
def key_rotate() -> None:
    """Replace the memory key (a passphrase store asks for a new passphrase) and shred the
    old one. Waits for no sleep: it refuses while one runs."""
    from assistant.store.rotate import rotate_master_key

    runtime = _runtime()
    with runtime.exclusive("a key rotation"):
        rotate_master_key(runtime.database, runtime.paths.key_file, runtime.passphrase_prompt)
    click.echo(f"New memory key in place ({runtime.database.get_meta('key_source')});")
    click.echo("the old key no longer opens your memory. Reopen any open chat window.")


@cli.command()
@click.option(
    "--once",
    "once",
    metavar="TEXT",
    help="Send one message (- reads it from stdin), print the reply, exit.",
)
@click.option("--conversation", type=int, help="Continue this conversation (with --once).")
def chat(once: str | None, conversation: int | None) -> None:
    """Chat with the assistant (opens the terminal UI unless --once is given)."""
    runtime = _runtime()
    if once is None:
        from assistant.tui.app import run_app

        run_app(runtime)  # asks for a passphrase on its own screen if one is needed
        return
    from assistant.chat import ChatSession
    from assistant.store.memory import validate_message

    if once == "-":
        once = sys.stdin.buffer.read().decode("utf-8", errors="surrogateescape")
    validate_message(once)
    store = runtime.memory
    engine = runtime.load_engine()
    session = ChatSession(
        store,
        engine,
        conversation,
        max_reply_tokens=runtime.config.max_reply_tokens,
        temperature=runtime.config.temperature,
    )

    def show(piece: str) -> None:
        click.echo(piece, nl=False)
        sys.stdout.flush()

    session.respond(once, on_piece=show)
    click.echo()


@cli.group(cls=_Group)
def model() -> None:
    """Add, list, choose and remove local models."""


@model.command("add")
@click.argument("source")
@click.option("--name", help="Name to register it under (default: from the path or repo id).")
@click.option(
    "--quant",
    type=click.Choice(["q8_0", "q4_0", "q4_k_m"]),
    help="Quantize the GGUF for chat (Hugging Face models only).",
)
def model_add(source: str, name: str | None, quant: str | None) -> None:
    """Add a model: a Hugging Face directory or hub repo id, a .gguf file, or ollama:NAME[:TAG].

    \b
    Examples:
      assistant model add Qwen/Qwen2.5-1.5B-Instruct --quant q8_0
      assistant model add ~/models/qwen2.5-1.5b-instruct-q4_k_m.gguf
      assistant model add ollama:qwen2.5:1.5b

    A GGUF file (or Ollama's copy) is used where it is; training dequantizes it
    once, the first time a night needs it.
    """
    record = _runtime().models.add(
        source, name, quant, progress=lambda step: click.echo(f"... {step}", err=True)
    )
    click.echo(f"Added {record.name} ({record.architecture}) -> {record.gguf_path}")


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def model_list(as_json: bool) -> None:
    """List registered models; * marks the one in use."""
    registry = _runtime().models
    active = registry.active()
    records = registry.list()
    if as_json:
        rows = [{**{k: str(v) for k, v in vars(r).items()}, "active": r == active} for r in records]
        click.echo(json.dumps(rows, indent=2))
        return
    if not records:
        click.echo(
            "No models yet: the first chat registers the starter (smollm2). Add another with"
            " `assistant model add DIR|REPO_ID|FILE.gguf|ollama:NAME`."
        )
    for record in records:
        mark = "*" if record == active else " "
        click.echo(
            f"{mark} {record.name}  {record.architecture}  {record.quant or 'full'}"
            f"  {record.source}"
        )


@model.command("use")
@click.argument("name")
def model_use(name: str) -> None:
    """Chat with NAME from now on."""
    from assistant.sleep.state import sleep_held_off

    runtime = _runtime()
    with sleep_held_off(runtime, "switching models"):
        runtime.models.use(name)
    click.echo(f"Now using {name}.")


@model.command("rm")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def model_rm(name: str, yes: bool) -> None:
    """Remove NAME, its files and the experts learned on it."""
    from assistant.sleep.state import sleep_held_off

    runtime = _runtime()
    runtime.models.get(name)
    if not yes:
        click.confirm(f"Remove {name} and every expert learned on it?", abort=True)
    with sleep_held_off(runtime, f"removing {name}"):
        runtime.models.remove(name)
    click.echo(f"Removed {name}.")


@cli.group(cls=_Group, invoke_without_command=True)
@click.option("--now", is_flag=True, help="Sleep now, whatever the time and power.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "torch", "mlx"]),
    help="Training backend (default: config, auto): auto is MLX on Apple silicon, torch"
    " elsewhere, or whichever is installed.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda", "mps", "gpu"]),
    default="auto",
    show_default=True,
    help="torch: cpu, cuda or mps; MLX: cpu or gpu.",
)
@click.option("--budget-minutes", type=float, help="Time the night may take (default: config).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def sleep(
    ctx: click.Context,
    now: bool,
    backend: str | None,
    device: str,
    budget_minutes: float | None,
    as_json: bool,
) -> None:
    """Consolidate today's memories into a new expert, verify it, then delete the logs.

    Ctrl-C pauses the night at its next step; the next sleep resumes from there.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not now:
        click.echo(ctx.get_help())
        return
    from assistant.sleep.options import SleepOptions, stop_on_signals
    from assistant.sleep.runner import SleepRunner

    runtime = _runtime()
    runtime.memory  # noqa: B018 - unlock (and maybe prompt) before the long work starts

    def progress(line: str) -> None:
        click.echo(f"... {line}", err=True)

    with stop_on_signals(progress) as signalled:
        options = SleepOptions(budget_minutes, backend, device, should_stop=signalled)
        report = SleepRunner(runtime, options, progress).run()
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())


@sleep.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sleep_status(as_json: bool) -> None:
    """The last night's report and how many messages wait for the next one."""
    from assistant.sleep.status import sleep_status as read_status

    status = read_status(_runtime())
    if as_json:
        click.echo(json.dumps(status.to_dict(), indent=2))
    else:
        click.echo(status.describe())


@sleep.command("why")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sleep_why(as_json: bool) -> None:
    """Would `sleep auto` sleep now? Each condition, its value, and whether it holds."""
    from assistant.sleep.trigger.auto import how_this_machine_sleeps
    from assistant.sleep.trigger.policy import Sensors, readiness

    runtime = _runtime()
    ready = readiness(runtime.config, runtime.database, runtime.paths.data_dir, Sensors())
    how = how_this_machine_sleeps(runtime)
    if as_json:
        click.echo(json.dumps({**ready.to_dict(), "how": how}, indent=2))
    else:
        click.echo(f"{ready.describe()}\nHow this machine sleeps: {how}.")


@sleep.command("auto")
@click.option("--key-on-stdin", is_flag=True, hidden=True, help="Read the key (hex) from stdin.")
def sleep_auto(key_on_stdin: bool) -> None:
    """What the scheduled job runs: sleep if every condition holds, else exit quietly.

    A sleep stopped by the person coming back or the power going resumes from its
    checkpoint the next time. What happened is appended to sleep-auto.log in the data
    directory (conditions and counts only, never what was said). A memory locked with a
    passphrase sleeps through the open chat app instead (see `assistant sleep why`).
    """
    from assistant.sleep.trigger.auto import sleep_if_due
    from assistant.sleep.trigger.policy import Sensors

    runtime = _runtime()
    if key_on_stdin:  # the app that unlocked the memory runs this night
        from assistant.sleep.trigger.auto import log

        try:
            runtime.handed_key = bytes.fromhex(sys.stdin.readline().strip())
            runtime.master_key  # noqa: B018 - a wrong key fails now, whatever the conditions
        except (ValueError, AssistantError):
            line = "the key the chat app handed over does not open the memory (was it rotated?)"
            log(runtime, f"not sleeping: {line}; reopen the app")
            raise AssistantError(f"Not sleeping: {line}.") from None
    sleep_if_due(runtime, Sensors())


@sleep.group("schedule", cls=_Group)
def sleep_schedule() -> None:
    """The per-user job that runs `sleep auto` through the night (systemd, launchd, Windows)."""


def _schedule(action: str) -> None:
    from assistant.sleep.trigger.policy import NightWindow
    from assistant.sleep.trigger.schedule import ScheduledJob

    window = NightWindow.parse(_runtime().config.sleep_window)
    for line in getattr(ScheduledJob(), action)(window):
        click.echo(line)


@sleep_schedule.command("install")
def schedule_install() -> None:
    """Install (or refresh) the job for the configured night window."""
    _schedule("install")


@sleep_schedule.command("remove")
def schedule_remove() -> None:
    """Unregister the job and delete its files."""
    _schedule("remove")


@sleep_schedule.command("show")
def schedule_show() -> None:
    """What is installed and when it next runs."""
    _schedule("show")


@cli.command()
def doctor() -> None:
    """What works on this machine: sensors, key store, backends and devices, the job."""
    from assistant.doctor import diagnose

    for line in diagnose(_runtime()):
        click.echo(line)


@cli.group(cls=_Group)
def adapters() -> None:
    """See, export, reset and import what the assistant learned (its LoRA experts)."""


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e5 else f"{num_bytes / 1e3:.1f} kB"


@adapters.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def adapters_list(as_json: bool) -> None:
    """Every expert of the active model, with a short summary of what it holds."""
    from assistant.adapters.manage import describe_all

    runtime = _runtime()
    model = runtime.require_model()
    rows = describe_all(runtime, model.name)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"{model.name} has learned nothing yet (no experts).")
    for row in rows:
        night = f"night {row['night']}" if row["night"] is not None else row["origin"]
        click.echo(
            f"#{row['id']}  {night}  rank {row['rank']}  scale {row['scale']:g}"
            f"  {_size(row['size_bytes'])}  {row['status']}\n    {row['summary']}"
        )


@adapters.command("show")
@click.argument("expert_id", type=int)
def adapters_show(expert_id: int) -> None:
    """Everything about one expert, as JSON."""
    from assistant.adapters.manage import describe

    runtime = _runtime()
    runtime.memory  # noqa: B018 - unlocked before the expert is read (see describe_all)
    expert = runtime.experts.get(runtime.require_model().name, expert_id)
    click.echo(json.dumps(describe(runtime, expert), indent=2))


@adapters.command("export")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["peft", "gguf", "mlx"]), default="peft", show_default=True
)
@click.option("--merge/--each", default=True, help="One adapter holding all experts (default).")
@click.option("--rank", type=int, help="Compress to this rank by truncated SVD.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def adapters_export(out: str, fmt: str, merge: bool, rank: int | None, yes: bool, as_json: bool):
    """Write the learned experts to OUT as a PEFT, GGUF (llama.cpp, Ollama) or MLX adapter."""
    from pathlib import Path

    from assistant.adapters import EXPORT_WARNING
    from assistant.adapters.manage import export

    click.echo(f"Warning: {EXPORT_WARNING}", err=True)
    if not yes:
        click.confirm("Export anyway?", abort=True)
    results = export(_runtime(), Path(out), fmt, each=not merge, rank=rank)
    if as_json:
        rows = [{**vars(r), "path": str(r.path)} for r in results]
        click.echo(json.dumps(rows, indent=2))
        return
    for result in results:
        experts = ", ".join(f"#{i}" for i in result.experts)
        line = f"Wrote {result.path} ({fmt}, rank {result.rank}, experts {experts})"
        if result.errors:
            worst = max(result.errors, key=result.errors.get)
            line += (
                f"; relative error per layer: max {result.errors[worst]:.3g} ({worst}),"
                f" mean {sum(result.errors.values()) / len(result.errors):.3g}"
            )
        click.echo(line)


@adapters.command("reset")
@click.argument("expert_ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Forget every expert of the model.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def adapters_reset(expert_ids: tuple[int, ...], everything: bool, yes: bool) -> None:
    """Forget experts: their files, registry rows and kept probe sets are deleted."""
    from assistant.adapters.manage import reset

    if bool(expert_ids) == everything:
        raise click.UsageError("Name expert ids, or pass --all (not both).")
    what = "every expert" if everything else ", ".join(f"#{i}" for i in expert_ids)
    if not yes:
        click.confirm(f"Forget {what}? This cannot be undone.", abort=True)
    removed = reset(_runtime(), expert_ids, everything=everything)
    click.echo(
        f"Forgot {', '.join(f'#{i}' for i in removed)}." if removed else "Nothing to forget."
    )


@adapters.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--scale", default=1.0, show_default=True, help="How strongly chat applies it.")
@click.option("--trust-base", is_flag=True, help="Accept an adapter naming another base model.")
def adapters_import(directory: str, scale: float, trust_base: bool) -> None:
    """Add a PEFT LoRA adapter trained elsewhere on the same base model as an expert."""
    from pathlib import Path

    from assistant.adapters.manage import import_adapter

    expert = import_adapter(_runtime(), Path(directory), scale, trust_base=trust_base)
    click.echo(f"Imported as expert #{expert.id} (rank {expert.rank}, scale {expert.scale:g}).")


@cli.group(cls=_Group)
def bench() -> None:
    """Benchmarks that print JSON (see also bench/ in the source tree)."""


@bench.command("recall")
@click.option("--seed", default=0, show_default=True, help="Picks facts, values and phrasings.")
@click.option("--nights", default=1, show_default=True)
@click.option("--facts-per-night", default=20, show_default=True)
@click.option("--updates-per-night", default=2, show_default=True)
@click.option("--unknown-per-night", default=10, show_default=True)
@click.option(
    "--model",
    "model_name",
    help="A registered model name, a .gguf file or a Hugging Face directory"
    " (default: the active model).",
)
@click.option(
    "--consolidation",
    type=click.Choice(["none", "sleep"]),
    default="none",
    show_default=True,
    help="What happens at night between telling and asking: nothing, or `sleep --now`.",
)
def bench_recall(
    seed: int,
    nights: int,
    facts_per_night: int,
    updates_per_night: int,
    unknown_per_night: int,
    model_name: str | None,
    consolidation: str,
) -> None:
    """Does the assistant remember what it was told? Prints JSON.

    Runs in a throwaway home: your own memory and experts are not touched.
    """
    from pathlib import Path

    from assistant.recall.benchmark import RecallBenchmark, RecallSettings, benchmark_runtime

    source = Path(model_name) if model_name else None
    if source is None or not source.exists():
        runtime = _runtime()
        record = runtime.models.get(model_name) if model_name else runtime.require_model()
        model_name = record.name
        source = record.gguf_path if record.runs_in_place else record.hf_dir
    settings = RecallSettings(seed, nights, facts_per_night, updates_per_night, unknown_per_night)

    def progress(line: str) -> None:
        click.echo(f"... {line}", err=True)

    def sleep_now(runtime) -> dict:
        from assistant.sleep.options import SleepOptions
        from assistant.sleep.runner import SleepRunner

        return SleepRunner(runtime, SleepOptions(seed=seed), progress).run().to_dict()

    with benchmark_runtime(source, "model") as runtime:
        benchmark = RecallBenchmark(
            runtime, settings, sleep_now if consolidation == "sleep" else None, progress
        )
        result = benchmark.run()
    click.echo(json.dumps({"model": model_name, **result}, indent=2))


def main() -> None:
    cli(prog_name="assistant")
