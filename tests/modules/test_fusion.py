from __future__ import annotations

import numpy as np
import pytest
import torch

from inf_embed import InfEmbed
from inf_embed.modules import get_fusion, list_fusions


def test_registry_lists_fusions_and_rejects_unknown_names():
    assert {"attention", "concat", "none"} <= set(list_fusions())
    with pytest.raises(ValueError, match="unknown fusion 'gated'"):
        get_fusion("gated")


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_empty_instruction_gives_the_plain_pooled_query(tiny_model, empty):
    queries = ["what is a neutrophil", "zip code of harahan"]
    plain = tiny_model.encode_document(queries)
    with_empty = tiny_model.encode_query(queries, instruction=empty)
    assert not np.isnan(with_empty).any()
    np.testing.assert_allclose(with_empty, plain, atol=1e-6)


def test_attention_fusion_output_depends_on_the_instruction(tiny_model):
    queries = ["what is a neutrophil"]
    a = tiny_model.encode_query(queries, instruction="I want a definition")
    b = tiny_model.encode_query(queries, instruction="I want the normal count range in adults")
    assert not np.allclose(a, b, atol=1e-4)


def test_attention_fusion_matches_the_paper_formula(tiny_model):
    """softmax over query tokens of H_I H_Q^T / sqrt(d), mean over instruction tokens, then L2 normalise."""
    query, instruction = "what is a neutrophil", "definition please"
    tok = tiny_model.tokenizer
    with torch.no_grad():
        q = tok([query], return_tensors="pt")
        i = tok([instruction], return_tensors="pt")
        hq = tiny_model.backbone(**q).last_hidden_state[0]
        hi = tiny_model.backbone(**i).last_hidden_state[0]
        attention = torch.softmax(hi @ hq.T / hq.shape[-1] ** 0.5, dim=-1)
        expected = torch.nn.functional.normalize((attention @ hq).mean(0), dim=0)
    got = tiny_model.encode_query(query, instruction=instruction, convert_to_tensor=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_concat_fusion_encodes_the_template_text(tiny_model_dir):
    model = InfEmbed.from_pretrained(tiny_model_dir, fusion="concat", concat_template="{instruction} || {query}")
    got = model.encode_query(["find x"], instruction="be brief")
    np.testing.assert_allclose(got, model.encode(["be brief || find x"]), atol=1e-6)
    np.testing.assert_allclose(model.encode_query(["find x"]), model.encode(["find x"]), atol=1e-6)


def test_none_fusion_ignores_the_instruction(tiny_model_dir):
    model = InfEmbed.from_pretrained(tiny_model_dir, fusion="none")
    np.testing.assert_allclose(
        model.encode_query(["find x"], instruction="be brief"), model.encode_query(["find x"]), atol=1e-6
    )
