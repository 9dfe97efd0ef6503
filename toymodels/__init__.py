"""Models, datasets and training loops of Toylab's replications: plain PyTorch, no Sacred."""
