"""The Adapters screen: what the assistant learned, exported or forgotten from the chat app.

The work (reading sealed reports, writing exports, deleting experts) runs in
worker threads through ``assistant.adapters.manage``, the same code as the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, Label, Select, Static

from assistant.adapters import EXPORT_WARNING
from assistant.errors import AssistantError


class ConfirmDialog(ModalScreen[bool]):
    """A yes/no question; dismissed with the answer."""

    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel")]

    def __init__(self, question: str, yes_label: str) -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes_label, id="confirm-yes", variant="error")
                yield Button("Cancel", id="confirm-no")

    @on(Button.Pressed)
    def _answer(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")


@dataclass(frozen=True)
class ExportRequest:
    out_dir: Path
    fmt: str
    each: bool
    rank: int | None


class ExportDialog(ModalScreen[ExportRequest | None]):
    """Where and how to export, under the warning that an adapter can reveal what it holds."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(EXPORT_WARNING, id="export-warning")
            yield Input(placeholder="Folder to create, e.g. ~/my-adapter", id="export-path")
            yield Select(
                [
                    ("PEFT (transformers)", "peft"),
                    ("GGUF (llama.cpp, Ollama)", "gguf"),
                    ("MLX (mlx-lm)", "mlx"),
                ],
                value="peft",
                allow_blank=False,
                id="export-format",
            )
            yield Checkbox("One adapter per expert (instead of one merged)", id="export-each")
            yield Input(placeholder="Compress to rank (optional)", type="integer", id="export-rank")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export", id="export-go", variant="warning")
                yield Button("Cancel", id="export-cancel")

    @on(Button.Pressed, "#export-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#export-go")
    def _go(self) -> None:
        path = self.query_one("#export-path", Input).value.strip()
        if not path:
            self.notify("Name the folder to export to.", severity="warning")
            return
        rank = self.query_one("#export-rank", Input).value.strip()
        self.dismiss(
            ExportRequest(
                Path(path).expanduser(),
                str(self.query_one("#export-format", Select).value),
                self.query_one("#export-each", Checkbox).value,
                int(rank) if rank else None,
            )
        )


class AdaptersScreen(Screen[None]):
    """Every expert of the active model; export them, or forget one or all."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back to chat"),
        Binding("e", "export", "Export"),
        Binding("f", "forget", "Forget selected"),
        Binding("F", "forget_all", "Forget all"),
    ]

    def compose(self) -> ComposeResult:
        yield Label("What I learned (LoRA experts)", id="adapters-title")
        yield DataTable(id="experts", cursor_type="row", zebra_stripes=True)
        yield Static("", id="expert-details")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#experts", DataTable)
        table.add_columns("id", "learned", "rank", "scale", "size", "status")
        self.rows: list[dict] = []
        self._load()

    @work(thread=True, exclusive=True, group="adapters")
    def _load(self) -> None:
        from assistant.adapters.manage import describe_all

        runtime = self.app.runtime
        try:
            model = runtime.require_model()
            rows = describe_all(runtime, model.name)
        except AssistantError as error:
            self.app.call_from_thread(self.app.show_error, error)
            return
        self.app.call_from_thread(self._show, rows)

    def _show(self, rows: list[dict]) -> None:
        self.rows = rows
        table = self.query_one("#experts", DataTable)
        table.clear()
        for row in rows:
            learned = f"night {row['night']}" if row["night"] is not None else row["origin"]
            size = f"{row['size_bytes'] / 1e3:.0f} kB"
            table.add_row(
                f"#{row['id']}",
                learned,
                row["rank"],
                f"{row['scale']:g}",
                size,
                row["status"],
                key=str(row["id"]),
            )
        if not rows:
            self.query_one("#expert-details", Static).update(
                "Nothing learned yet: experts appear after a sleep (`assistant sleep --now`)."
            )

    @on(DataTable.RowHighlighted, "#experts")
    def _details(self, event: DataTable.RowHighlighted) -> None:
        row = next((r for r in self.rows if str(r["id"]) == event.row_key.value), None)
        if row is not None:
            modules = ", ".join(row["target_modules"])
            self.query_one("#expert-details", Static).update(
                f"{row['summary']}\nCreated {row['created_at']}; adapts {modules}."
            )

    def _selected(self) -> int | None:
        table = self.query_one("#experts", DataTable)
        if not self.rows or table.cursor_row < 0:
            return None
        return self.rows[table.cursor_row]["id"]

    # -- forget ----------------------------------------------------------------------
    def action_forget(self) -> None:
        expert_id = self._selected()
        if expert_id is not None:
            self._confirm_reset(f"Forget expert #{expert_id}? This cannot be undone.", [expert_id])

    def action_forget_all(self) -> None:
        if self.rows:
            self._confirm_reset("Forget everything learned? This cannot be undone.", None)

    def _confirm_reset(self, question: str, ids: list[int] | None) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self._reset(ids)

        self.app.push_screen(ConfirmDialog(question, "Forget"), answered)

    @work(thread=True, exclusive=True, group="adapters")
    def _reset(self, ids: list[int] | None) -> None:
        from assistant.adapters.manage import reset

        try:
            removed = reset(self.app.runtime, ids or (), everything=ids is None)
        except AssistantError as error:
            self.app.call_from_thread(self.app.show_error, error)
            return
        self.app.call_from_thread(self.app.reload_experts)
        self.app.call_from_thread(
            self.notify, f"Forgot {', '.join(f'#{i}' for i in removed) or 'nothing'}."
        )
        self._load()

    # -- export ------------------------------------------------------------------------
    def action_export(self) -> None:
        def chosen(request: ExportRequest | None) -> None:
            if request is not None:
                self._export(request)

        self.app.push_screen(ExportDialog(), chosen)

    @work(thread=True, exclusive=True, group="adapters")
    def _export(self, request: ExportRequest) -> None:
        from assistant.adapters.manage import export

        try:
            results = export(
                self.app.runtime, request.out_dir, request.fmt, each=request.each, rank=request.rank
            )
        except AssistantError as error:
            self.app.call_from_thread(self.app.show_error, error)
            return
        self.app.call_from_thread(
            self.notify, f"Exported {len(results)} adapter(s) to {request.out_dir}."
        )
