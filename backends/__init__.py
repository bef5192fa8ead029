"""Training backends behind one protocol (DESIGN.md section 10).

``protocol`` is the interface the sleep runner uses; ``torch_backend`` implements
it with transformers + PEFT on CUDA, MPS or the CPU. MLX comes later.
"""
