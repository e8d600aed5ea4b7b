"""The small GPT: shapes, causality, tied and untied heads, bad shapes."""

import pytest
import torch

from ncollapse.nn.gpt import GPT, GPTConfig

CFG = GPTConfig(vocab_size=50, context=12, layers=2, width=16, heads=4)


def test_shapes_and_features_are_what_the_head_classifies():
    model = GPT(CFG, seed=0).eval()
    ids = torch.randint(0, 50, (3, 10))
    h, logits = model(ids)
    assert h.shape == (3, 10, 16) and logits.shape == (3, 10, 50)
    assert torch.allclose(logits, h @ model.head.weight.T)
    assert torch.allclose(h.mean(-1), torch.zeros(3, 10), atol=1e-5)  # the final LayerNorm's output


def test_logits_at_t_do_not_depend_on_later_tokens():
    model = GPT(CFG, seed=1).eval()
    ids = torch.randint(0, 50, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 50
    _, a = model(ids)
    _, b = model(changed)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_tied_and_untied_heads_and_seeding():
    untied, tied = GPT(CFG, seed=0), GPT(GPTConfig(50, 12, 2, 16, 4, tied=True), seed=0)
    assert untied.head.weight is not untied.token.weight and tied.head.weight is tied.token.weight
    assert untied.num_parameters() - tied.num_parameters() == 50 * 16
    assert untied.num_parameters(embeddings=False) == untied.num_parameters() - 50 * 16 - 12 * 16
    assert torch.equal(GPT(CFG, seed=0).head.weight, untied.head.weight)
    assert not torch.equal(GPT(CFG, seed=1).head.weight, untied.head.weight)


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(ValueError, match="not divisible by heads"):
        GPTConfig(50, 12, 2, 18, 4)
    model = GPT(CFG)
    with pytest.raises(ValueError, match="exceeds the model's context 12"):
        model(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="must be 2-D"):
        model(torch.zeros(13, dtype=torch.long))
