"""Training backends behind one protocol (DESIGN.md section 10).

``protocol`` is the interface the sleep runner uses; ``torch_backend`` implements
it with transformers + PEFT on CUDA, MPS or the CPU, ``mlx_backend`` with MLX on
Apple silicon (or MLX's CPU device elsewhere); ``choice`` says which one a night
uses (``--backend auto|torch|mlx``) and loads it.
"""
