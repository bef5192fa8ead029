"""Sleep: consolidating the day's memories into a verified LoRA expert (DESIGN.md sections 7-9).

``runner`` sequences a night; each stage is a module of its own (``transition``,
``triage``, ``seeding``, ``verify``, ``wake``); ``auto``, ``policy``, ``sensors``
and ``schedule`` decide when a night runs by itself.
"""
