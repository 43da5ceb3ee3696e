import pytest
import torch

from deepfake_scan.models.registry import create_model, list_architectures


def test_registry_lists_the_required_architectures():
    names = set(list_architectures())
    assert {
        "mobilenet_v2",
        "resnet18",
        "resnet18_cut",
        "efficientnet_b0",
        "small_cnn",
        "npr_resnet",
    } <= names


@pytest.mark.parametrize("name", list_architectures())
def test_every_architecture_trains_one_step(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2,)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1,)


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError, match="npr_resnet"):
        create_model("nope")
