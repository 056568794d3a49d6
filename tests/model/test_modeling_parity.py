"""Parity of QWenLMHeadModel with the original Qwen-VL on the tiny reference checkpoint (fp32; CPU, and a CUDA
GPU under ``-m gpu``).

Every prompt p1..p7 of ``tiny/vectors.json``: identical input ids, logits within 1e-4, identical greedy ids,
KV-cache step scores within 1e-4. Measured max differences are printed (``pytest -s``) and recorded as
properties (``--junitxml``).
"""

from __future__ import annotations

import base64
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import qvl_agent.model  # noqa: F401  (registers the Auto classes)
from qvl_agent.model import InputError, QWenLMHeadModel, QWenTokenizer
from qvl_agent.prompting.chatml import make_context

pytestmark = pytest.mark.testdata

ATOL = 1e-4
EOS = 151643
PROMPTS = [
    "p1_text_only",
    "p2_one_image",
    "p3_two_images",
    "p4_grounding_raw",
    "p5_multiturn",
    "p6_raw_grounding_text",
    "p7_long_ntk_logn",
]


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint, device):
    """(model, tokenizer) loaded through the Auto classes onto ``device``, with cwd = the checkpoint (prompts
    use images/...)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tiny_checkpoint)
        model = AutoModelForCausalLM.from_pretrained(".").to(device)
        tokenizer = AutoTokenizer.from_pretrained(".")
        yield model.eval(), tokenizer


@pytest.fixture(scope="module")
def vectors(qwen_vl_testdata):
    return load_file(qwen_vl_testdata / "tiny" / "vectors.safetensors")


@pytest.fixture(scope="module")
def meta(qwen_vl_testdata):
    data = json.loads((qwen_vl_testdata / "tiny" / "vectors.json").read_text())
    data["live_columns"] = json.loads((qwen_vl_testdata / "tiny" / "live_ids.json").read_text())["columns"]
    data["by_name"] = {p["name"]: p for p in data["prompts"]}
    return data


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float().cpu() - b.float().cpu()).abs().max().item()


def test_auto_classes_give_our_model(tiny):
    model, tokenizer = tiny
    assert type(model) is QWenLMHeadModel
    assert type(tokenizer) is QWenTokenizer
    assert model.dtype == torch.float32  # the tiny config sets fp32: true (its torch_dtype says float16)
    assert model.generation_config.chat_format == "chatml"


@pytest.mark.parametrize("name", PROMPTS)
def test_prompt_parity(name, tiny, vectors, meta, record_property):
    model, tokenizer = tiny
    prompt = meta["by_name"][name]
    _, context = make_context(
        tokenizer,
        prompt.get("query", prompt["text"]),
        history=prompt.get("history"),
        system=prompt.get("system", ""),
        chat_format=prompt["format"],
    )
    input_ids = torch.tensor([context])
    assert torch.equal(input_ids[0], vectors[f"{name}.input_ids"])
    input_ids = input_ids.to(model.device)

    with torch.no_grad():
        prefill = model(input_ids, use_cache=True)
    logits = prefill.logits[0]
    # dynamic NTK: alpha chosen from the prompt length at prefill, kept on the cache for decoding
    assert prefill.cache.qwen_ntk_alpha == prompt["ntk_alpha_at_prefill"]
    live_ref = vectors[f"{name}.logits_live"]
    diff_last = _max_diff(logits[-1], vectors[f"{name}.logits_last"])
    diff_live = _max_diff(logits[-live_ref.shape[0] :, meta["live_columns"]], live_ref)

    out = model.generate(
        input_ids,
        max_new_tokens=16,
        do_sample=False,
        eos_token_id=EOS,
        pad_token_id=EOS,
        output_scores=True,
        return_dict_in_generate=True,
    )
    gen_ids = out.sequences[0, input_ids.shape[1] :]
    scores = torch.stack(out.scores)[:, 0][:, meta["live_columns"]]
    diff_scores = _max_diff(scores, vectors[f"{name}.gen_scores_live"])

    print(
        f"{name}: max|dlogits_last|={diff_last:.2e} max|dlogits_live|={diff_live:.2e} max|dscores|={diff_scores:.2e}"
    )
    record_property(f"{name}.max_diff", {"last": diff_last, "live": diff_live, "scores": diff_scores})
    assert diff_last <= ATOL
    assert diff_live <= ATOL
    assert gen_ids.tolist() == vectors[f"{name}.gen_ids"].tolist()
    assert diff_scores <= ATOL


def _image_prompt(model, tokenizer, reference: str) -> torch.Tensor:
    query = f"Picture 1: <img>{reference}</img>\nWhat is in this picture?"
    _, context = make_context(tokenizer, query, system="You are a helpful assistant.")
    return torch.tensor([context], device=model.device)


def test_images_passed_alongside_text(tiny, vectors, tiny_checkpoint):
    """A PIL image, a data URL or preprocessed pixel_values replace the path inside <img>...</img>."""
    model, tokenizer = tiny
    ids = _image_prompt(model, tokenizer, "picture-a")
    reference = vectors["p2_one_image.logits_last"]
    png = (tiny_checkpoint / "images" / "img_a.png").read_bytes()
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    pil = Image.open(tiny_checkpoint / "images" / "img_a.png")
    with torch.no_grad():
        for kwargs in (
            {"images": [pil]},
            {"images": [data_url]},
            {"pixel_values": vectors["img_a.pixel_values"][None]},
        ):
            logits = model(ids, **kwargs).logits[0, -1]
            assert _max_diff(logits, reference) <= ATOL, kwargs.keys()


def test_generate_with_images_uses_them_at_prefill_only(tiny, vectors, tiny_checkpoint):
    model, tokenizer = tiny
    ids = _image_prompt(model, tokenizer, "x")
    pil = Image.open(tiny_checkpoint / "images" / "img_a.png")
    out = model.generate(
        ids, images=[pil], max_new_tokens=16, do_sample=False, eos_token_id=EOS, pad_token_id=EOS
    )
    assert out[0, ids.shape[1] :].tolist() == vectors["p2_one_image.gen_ids"].tolist()


def test_image_count_mismatch_is_an_input_error(tiny, tiny_checkpoint):
    model, tokenizer = tiny
    ids = _image_prompt(model, tokenizer, "x")
    pil = Image.open(tiny_checkpoint / "images" / "img_a.png")
    with pytest.raises(InputError, match=r"2 images given but the prompt holds 1"):
        model(ids, images=[pil, pil])
    with pytest.raises(InputError, match=r"0 pixel_values given but the prompt holds 1"):
        model(ids, pixel_values=torch.zeros(0, 3, 56, 56))


def _padded_pair(model, vectors, left: bool) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Two reference prompts of different lengths as one padded batch: (rows, input_ids, attention_mask)."""
    rows = [
        vectors[f"{name}.input_ids"].to(model.device) for name in ("p1_text_only", "p6_raw_grounding_text")
    ]
    width = max(len(r) for r in rows)
    ids = torch.full((2, width), EOS, device=model.device)
    mask = torch.zeros((2, width), dtype=torch.long, device=model.device)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = row
        mask[i, span] = 1
    return rows, ids, mask


def test_left_padded_batch_matches_single_rows(tiny, vectors):
    """Positions come from the attention mask (quirk 3 fixed): padding does not shift rotary angles."""
    model, _ = tiny
    rows, ids, mask = _padded_pair(model, vectors, left=True)
    width = ids.shape[1]
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            single = model(row[None]).logits[0]
            assert _max_diff(batched[i, width - len(row) :], single) <= ATOL
        out = model.generate(
            ids, attention_mask=mask, max_new_tokens=4, do_sample=False, eos_token_id=EOS, pad_token_id=EOS
        )
    assert out[0, width:].tolist() == vectors["p1_text_only.gen_ids"][:4].tolist()
    assert out[1, width:].tolist() == vectors["p6_raw_grounding_text.gen_ids"][:4].tolist()


def test_right_padded_batch_is_plain_causal_and_matches_single_rows(tiny, vectors):
    """Training batches are right-padded: no [seq, seq] mask is built (SDPA's is_causal instead), and every
    real position still gets the logits it gets alone."""
    model, _ = tiny
    rows, ids, mask = _padded_pair(model, vectors, left=False)
    width = ids.shape[1]
    like = torch.zeros(1, device=model.device)
    assert model.transformer._attention_mask(mask, 2, width, 0, like) is None
    assert model.transformer._attention_mask(mask.flip(-1), 2, width, 0, like) is not None  # left padding
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            single = model(row[None]).logits[0]
            assert _max_diff(batched[i, : len(row)], single) <= ATOL


def test_multi_token_step_with_cache_matches_full_forward(tiny, vectors):
    """Cache length is read from the sequence axis (quirk 3 fixed), so chunked prefill is exact."""
    model, _ = tiny
    ids = vectors["p6_raw_grounding_text.input_ids"][None].to(model.device)
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :20], use_cache=True)
        second = model(ids[:, 20:], cache=first.cache).logits
    assert _max_diff(torch.cat([first.logits, second], dim=1), full) <= ATOL


def test_labels_give_shifted_loss_ignoring_minus_100(tiny, vectors):
    model, _ = tiny
    ids = vectors["p1_text_only.input_ids"][None].to(model.device)
    labels = ids.clone()
    labels[:, :10] = -100
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[0, 9:-1], ids[0, 10:])
    assert torch.allclose(out.loss, expected, atol=1e-5)
    out.loss.backward()
    assert model.lm_head.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_decoder_attention_on_a_gpu_keeps_off_cudnn(tiny, vectors, monkeypatch):
    """On CUDA the decoder's masked attention runs with cuDNN's SDPA disabled (cuDNN builds a new plan for every
    key length, i.e. at every decoding step); on the CPU the global choice is left alone."""
    model, _ = tiny
    real = torch.nn.functional.scaled_dot_product_attention
    cudnn_allowed: list[bool] = []

    def spy(*args, **kwargs):
        if "attn_mask" in kwargs:  # the decoder's call (the vision tower's has no mask)
            cudnn_allowed.append(torch.backends.cuda.cudnn_sdp_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    ids = vectors["p2_one_image.input_ids"][None].to(model.device)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=3, do_sample=False, eos_token_id=EOS, pad_token_id=EOS)
    assert cudnn_allowed and set(cudnn_allowed) == {model.device.type == "cpu"}
    assert torch.backends.cuda.cudnn_sdp_enabled()  # restored after each call
