"""Binary-token image generation on procedurally rendered 32×32 scenes.

A small, CPU-trainable version of BitDance (Ai et al., "BitDance: Scaling Autoregressive
Generative Models with Binary Tokens", arXiv 2602.14041): a convolutional tokenizer whose
latent channels are binarized with ``sign`` (lookup-free quantization), and a causal
transformer that predicts those binary tokens with a binary diffusion head.

Modules: ``scenes`` (prompts and images), ``quantizer`` (sign quantization and its
entropy loss), ``tokenizer`` (the autoencoder, training, saving) and ``metrics`` (PSNR
and code usage).
"""
