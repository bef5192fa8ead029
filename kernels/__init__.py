"""Fused LoRA-experts and distillation-loss kernels: torch reference, Triton, MLX (DESIGN.md section 10).

Not built yet.
"""
