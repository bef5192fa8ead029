"""Fused LoRA-experts and distillation-loss kernels (DESIGN.md section 10).

Not built yet.
"""
