"""Export a minivgg model to the same architecture in torch.nn, with the same weights.

Each layer says what it is in torch.nn (`Module.torch_twin`, next to its forward); this
module builds the whole model's twin from those and copies the state in. torch is imported
only inside `to_torch`: minivgg never needs it to run. The tests and the speed benchmark use
this to compare against PyTorch layer for layer.
"""
from __future__ import annotations


def to_torch(model):
    """A torch.nn module with the architecture, weights, buffers and train/eval mode of `model`."""
    import torch

    twin = model.torch_twin(torch.nn)
    state = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    for name, p in twin.named_parameters():
        p.requires_grad_(name not in frozen)
    twin.train(model.training)
    return twin
