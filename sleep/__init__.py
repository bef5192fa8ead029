"""Sleep: consolidating the day's memories into a verified LoRA expert (DESIGN.md sections 7-9).

Not built yet: see the open issue for `assistant sleep --now`.
"""
