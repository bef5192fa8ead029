"""What the assistant learned, as portable adapters: list, export, reset, import."""

# Shown before every export (CLI and chat app): an export is a data export.
EXPORT_WARNING = (
    "An adapter can reveal what it learned: anyone who loads it on the same base model"
    " can ask it about you."
)
