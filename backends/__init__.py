"""Training backends behind one protocol: torch (CUDA/CPU/MPS) and MLX (DESIGN.md section 10).

Not built yet: the torch backend arrives with `assistant sleep --now`.
"""
