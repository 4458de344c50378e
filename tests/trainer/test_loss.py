"""The chunked output layer + cross-entropy (trainer/loss.py) against PyTorch's own
`F.cross_entropy(lm_head(hidden))`: the same loss and the same gradients, for chunk sizes that do
and do not divide the tokens, with and without a trained output layer, and under no_grad; then in
the tiny Llama itself (tied embedding and output layer, every weight trained)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from train_helpers import smoke  # noqa: E402

from assay.trainer.data import FlatCollator, encode_frame  # noqa: E402
from assay.trainer.loss import linear_cross_entropy_sum, scored_loss_sum  # noqa: E402


def _plain_and_chunked(chunk: int, train_weight: bool):
    torch.manual_seed(0)
    tokens, width, vocab = 37, 16, 500
    head = torch.nn.Linear(width, vocab, bias=False)
    head.weight.requires_grad_(train_weight)
    hidden = torch.randn(tokens, width) * 3  # large logits: the log-sum-exp must stay stable
    targets = torch.randint(0, vocab, (tokens,))
    results = []
    for chunk_tokens in (0, chunk):
        head.weight.grad = None
        h = hidden.clone().requires_grad_(True)
        loss = linear_cross_entropy_sum(h, head, targets, chunk_tokens)
        (loss * 0.25).backward()  # a scale on the way back, as the Trainer divides by the token count
        results.append((loss.detach(), h.grad, head.weight.grad))
    return results


@pytest.mark.parametrize("chunk", [1, 8, 37, 256])
@pytest.mark.parametrize("train_weight", [False, True])
def test_chunked_loss_and_gradients_equal_the_plain_ones(chunk, train_weight):
    (plain, plain_h, plain_w), (chunked, chunked_h, chunked_w) = _plain_and_chunked(chunk, train_weight)
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-5)
    assert torch.allclose(chunked_h, plain_h, atol=1e-6, rtol=1e-4)
    if train_weight:
        assert torch.allclose(chunked_w, plain_w, atol=1e-6, rtol=1e-4)
    else:
        assert plain_w is None and chunked_w is None


def test_chunked_loss_under_no_grad_is_the_same_number():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 300, bias=False)
    hidden, targets = torch.randn(20, 8), torch.randint(0, 300, (20,))
    with torch.no_grad():
        plain = linear_cross_entropy_sum(hidden, head, targets, 0)
        chunked = linear_cross_entropy_sum(hidden, head, targets, 6)
    assert chunked.grad_fn is None
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-5)


def test_chunked_loss_trains_the_tiny_llama_like_the_plain_loss(ws):
    from assay.core.models import load_model, load_tokenizer

    cfg = smoke()
    tok = load_tokenizer(cfg, ws.root)
    batch = FlatCollator()(encode_frame(tok, ws.read("small").head(6), 128).examples)
    grads, losses = [], []
    for chunk_tokens in (0, 50):
        model = load_model(cfg, ws.root, tok)  # same seed: same weights
        assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as SmolLM2
        loss, scored = scored_loss_sum(model, batch, chunk_tokens)
        assert scored > 50  # more than one chunk
        (loss / scored).backward()
        losses.append(loss.item())
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-3), name


def test_the_trainer_counts_flops_as_transformers_does_with_the_weight_count_taken_once(tmp_path):
    from transformers import Trainer, TrainingArguments

    from assay.trainer.loss import scored_tokens_trainer

    model = torch.nn.Module()
    model.main_input_name = "input_ids"
    walks = []

    def num_parameters(exclude_embeddings=False):
        walks.append(exclude_embeddings)
        return 1000

    model.num_parameters = num_parameters
    model.weight = torch.nn.Parameter(torch.zeros(1))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = scored_tokens_trainer()(model=model, args=args)
    batches = [{"input_ids": torch.zeros(1, n, dtype=torch.long)} for n in (7, 300, 1)]
    ours = [trainer.floating_point_ops(b) for b in batches]
    assert len(walks) == 1  # the weights were counted once, for three batches
    assert ours == [Trainer.floating_point_ops(trainer, b) for b in batches] == [6 * 1000 * n for n in (7, 300, 1)]
    assert trainer.floating_point_ops({"labels": torch.zeros(1, 3)}) == 0  # no input ids: the Trainer's 0


def test_compiling_a_model_without_decoder_layers_warns_and_trains_eagerly(capsys):
    from assay.trainer.compile import compiled_layers

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with compiled_layers(model, "default") as layers:
        assert layers == []
        assert model[0]._compiled_call_impl is None and model._compiled_call_impl is None
    assert "Sequential has no decoder layers" in capsys.readouterr().err
