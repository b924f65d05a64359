"""Binary-token image generation on procedurally rendered 32×32 scenes.

A small, CPU-trainable version of BitDance (Ai et al., "BitDance: Scaling Autoregressive
Generative Models with Binary Tokens", arXiv 2602.14041): a convolutional tokenizer whose
latent channels are binarized with ``sign`` (lookup-free quantization), and a causal
transformer that predicts those binary tokens with a binary diffusion head.

Modules: ``scenes`` (prompts and images), ``quantizer`` (sign quantization and its
entropy loss), ``tokenizer`` (the autoencoder, training, saving), ``metrics`` (PSNR
and code usage), ``ordering`` (next-patch order and block-causal masks), ``heads`` (the
binary diffusion head and the per-bit baseline), ``generator`` (the transformer),
``checkpoint`` (the model folder), ``pipeline`` (two-stage training) and ``cli``
(``erlgym image train`` and ``erlgym image sample``).
"""
