"""The Textual terminal app: chat screen, conversation list, status bar, first-run screen."""
