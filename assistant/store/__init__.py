"""The encrypted store on disk: one SQLite file, its keys, and the memories in it.

``db`` opens the file and applies its named migrations (it also holds the model
and expert registries); ``keys`` unlocks the master key and wraps each epoch's
data key; ``memory`` keeps every turn encrypted under its epoch's key and
shreds an epoch once sleep has consolidated it.
"""
