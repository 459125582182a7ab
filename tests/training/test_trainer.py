"""Trainer: embeddings equal to inference, determinism, exact resume, NaN stop, eval mode, data order."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from _training_helpers import (
    one_thread,  # noqa: F401  (autouse fixture)
    records,
    tiny,
)
from _training_helpers import (
    small_args as _args,
)
from _training_helpers import (
    weights as _weights,
)

from inf_embed import InfEmbed
from inf_embed.data import build_text_batch
from inf_embed.losses import get_loss
from inf_embed.training import NonFiniteLossError, Trainer, TrainingArguments
from inf_embed.training.checkpoint import latest_checkpoint, list_checkpoints
from inf_embed.training.trainer import _Encoder, make_head, plan_batch


def _assert_same(a, b, exact=True):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], msg=k)


@pytest.mark.parametrize("fusion", ["attention", "concat", "residual", "anchored", "conditioned"])
def test_training_embeddings_equal_encode_query_and_encode_document(tiny_model_dir, fusion):
    model = tiny(tiny_model_dir, fusion).eval()
    if fusion == "residual":  # a trained-looking projection, so the instruction path is not the zero map
        with torch.no_grad():
            weight = model.fusion.proj.weight
            weight.copy_(0.5 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    loss = get_loss("multi:P+I+IQ")
    text, inputs = _head_inputs(model, loss)
    queries = model.encode_query(text.queries, instruction=text.instructions, convert_to_tensor=True)
    passages = model.encode_document(text.positives, convert_to_tensor=True)
    torch.testing.assert_close(inputs["query_embeddings"], queries, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(inputs["passage_embeddings"], passages, rtol=1e-4, atol=1e-5)
    # variant m of row i is the query of row i under instruction variants.texts[i][m]
    row = 1
    variant = model.encode_query([text.queries[row]] * 3, instruction=text.variants.texts[row], convert_to_tensor=True)
    torch.testing.assert_close(inputs["instruction_variant_embeddings"][row], variant, rtol=1e-4, atol=1e-5)
    negatives = model.encode_query(
        [q for _, q in text.negative_queries], instruction=[i for i, _ in text.negative_queries], convert_to_tensor=True
    )
    torch.testing.assert_close(inputs["query_negative_embeddings"], negatives, rtol=1e-4, atol=1e-5)


def test_fixed_seed_gives_identical_weights_and_changes_them(tiny_model_dir, tmp_path):
    data = records(8)
    runs = []
    for k in range(2):
        model = tiny(tiny_model_dir, "concat")
        before = _weights(model)
        out = Trainer(model, _args(tmp_path / f"run{k}", max_steps=2), data).train()
        runs.append((_weights(model), out.training_loss))
    _assert_same(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    assert not torch.equal(
        before["backbone.embeddings.word_embeddings.weight"], runs[0][0]["backbone.embeddings.word_embeddings.weight"]
    )


def test_resume_from_checkpoint_continues_exactly(tiny_model_dir, tmp_path):
    data = records(8)  # 3 micro-batches per epoch with batch 3: the run crosses an epoch boundary
    straight = tiny(tiny_model_dir, "concat")
    Trainer(straight, _args(tmp_path, max_steps=4, save_steps=2), data).train()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]
    shutil.rmtree(tmp_path / "checkpoint-4")  # as if the job had died during step 3

    resumed = tiny(tiny_model_dir, "concat")
    with torch.no_grad():  # different starting weights: everything must come from the checkpoint
        for p in resumed.parameters():
            p.add_(0.5)
    out = Trainer(resumed, _args(tmp_path, max_steps=4, save_steps=2, resume=True), data).train()
    assert out.global_step == 4
    _assert_same(_weights(straight), _weights(resumed), exact=False)


def test_a_fresh_run_into_a_folder_with_checkpoints_is_refused(tiny_model_dir, tmp_path):
    data = records(6)
    Trainer(tiny(tiny_model_dir), _args(tmp_path, max_steps=1, save_steps=1), data).train()
    with pytest.raises(ValueError, match=r"output_dir: .* holds checkpoints of an earlier run \(checkpoint-1\)"):
        Trainer(tiny(tiny_model_dir), _args(tmp_path, max_steps=1, save_steps=1), data).train()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]


def test_resume_rejects_a_different_batch_size(tiny_model_dir, tmp_path):
    data = records(6)
    Trainer(tiny(tiny_model_dir), _args(tmp_path, max_steps=1, save_steps=1), data).train()
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(tiny(tiny_model_dir), _args(tmp_path, max_steps=2, batch_size=2, resume=True), data).train()


def test_resume_rejects_changed_optimizer_schedule_and_loss_arguments_naming_each(tiny_model_dir, tmp_path):
    data = records(6)
    base = dict(max_steps=2, save_steps=1, warmup_steps=0, weight_decay=0.0, loss="uni:P")
    Trainer(tiny(tiny_model_dir, "concat"), _args(tmp_path, **base), data).train()
    shutil.rmtree(tmp_path / "checkpoint-2")
    changed = dict(
        base, max_steps=4, learning_rate=5e-2, weight_decay=0.3, loss="multi:P+I+IQ+IX+Q", loss_options="weight=0.5"
    )
    with pytest.raises(ValueError, match="resume: the checkpoint") as error:
        Trainer(tiny(tiny_model_dir, "concat"), _args(tmp_path, **changed, resume=True), data).train()
    message = str(error.value)
    for part in (
        "learning_rate: 0.001 -> 0.05",
        "weight_decay: 0.0 -> 0.3",
        "loss: 'uni:P' -> 'multi:P+I+IQ+IX+Q'",
        "loss_options: None -> 'weight=0.5'",
        "total steps: 2 -> 4 (max_steps: 2 -> 4)",
    ):
        assert part in message, part
    # a warm-up given as a ratio is compared as the steps it gives
    with pytest.raises(ValueError, match=r"warm-up steps: 0 -> 1 \(warmup_steps: 0 -> None\)"):
        Trainer(
            tiny(tiny_model_dir, "concat"), _args(tmp_path, **dict(base, warmup_steps=None), resume=True), data
        ).train()


def test_resume_allows_changed_logging_saving_and_memory_arguments(tiny_model_dir, tmp_path):
    data = records(6)
    base = dict(max_steps=2, save_steps=1, loss="uni:P", epochs=3.0)
    Trainer(tiny(tiny_model_dir, "concat"), _args(tmp_path, **base), data).train()
    shutil.rmtree(tmp_path / "checkpoint-2")
    same = dict(
        base,
        epochs=5.0,  # ignored: max_steps is set
        logging_steps=2,
        save_steps=3,
        save_total_limit=1,
        cache_chunk_size=4,
        gradient_checkpointing=True,
        show_progress_bar=False,
    )
    out = Trainer(tiny(tiny_model_dir, "concat"), _args(tmp_path, **same, resume=True), data).train()
    assert out.global_step == 2


def test_nan_loss_stops_training_naming_the_step(tiny_model_dir, tmp_path):
    loss = get_loss("multi:P+I")
    calls = {"n": 0}
    original = loss.forward

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        value = original(*args, **kwargs)
        return value * float("nan") if calls["n"] == 2 else value

    loss.forward = poisoned
    model = tiny(tiny_model_dir)
    trainer = Trainer(model, _args(tmp_path, max_steps=3), records(9), loss=loss)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 2") as info:
        trainer.train()
    assert info.value.step == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_a_non_finite_gradient_stops_training_with_or_without_clipping(tiny_model_dir, tmp_path, max_grad_norm):
    model = tiny(tiny_model_dir, "concat")
    before = _weights(model)
    model.backbone.embeddings.word_embeddings.weight.register_hook(lambda grad: grad * float("inf"))
    trainer = Trainer(model, _args(tmp_path, max_steps=2, max_grad_norm=max_grad_norm), records(6))
    with pytest.raises(NonFiniteLossError, match="gradient norm is .* at step 1"):
        trainer.train()
    _assert_same(before, _weights(model))  # no update was applied


def test_evaluator_runs_in_eval_mode_every_eval_steps(tiny_model_dir, tmp_path):
    seen = []

    def evaluator(model):
        seen.append(model.training)
        return {"score": float(len(seen))}

    out = Trainer(
        tiny(tiny_model_dir, "concat"), _args(tmp_path, max_steps=3, eval_steps=2), records(6), evaluator=evaluator
    ).train()
    assert seen == [False, False]  # step 2 and the end
    assert out.metrics["score"] == 2.0
    assert [e["step"] for e in out.log_history if "eval_score" in e] == [2, 3]


def test_micro_batches_keep_records_whole_and_cover_each_epoch_once(tiny_model_dir, tmp_path):
    trainer = Trainer(tiny(tiny_model_dir), _args(tmp_path, batch_size=4), records(10))
    assert trainer.micro_batches_per_epoch == 3  # 4 + 4 + 2 records
    epoch = [trainer.micro_batch_records(b) for b in range(3)]
    assert sorted(i for batch in epoch for i in batch) == list(range(10))
    assert trainer.micro_batch_records(3) != epoch[0] or trainer.micro_batch_records(4) != epoch[1]  # reshuffled
    text = build_text_batch([trainer.train_data[i] for i in epoch[0]])
    assert len(text) == 8 and text.record_index == [0, 0, 1, 1, 2, 2, 3, 3]  # both items of every record


def test_accumulation_bf16_checkpointing_and_cache_train_and_save_a_loadable_model(tiny_model_dir, tmp_path):
    from inf_embed import InfEmbed

    args = _args(
        tmp_path,
        max_steps=2,
        gradient_accumulation_steps=2,
        bf16=True,
        gradient_checkpointing=True,
        cache_chunk_size=4,
        save_steps=1,
        save_total_limit=1,
    )
    out = Trainer(tiny(tiny_model_dir, "concat"), args, records(8), loss="uni:P+I+IQ").train()
    assert out.global_step == 2 and out.training_loss == out.training_loss
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    assert latest_checkpoint(tmp_path).endswith("checkpoint-2")
    reloaded = InfEmbed.from_pretrained(out.model_path)
    assert reloaded.config.fusion == "concat"


def test_plain_queries_add_a_plain_record_per_record_and_train(tiny_model_dir, tmp_path):
    data = records(4)
    trainer = Trainer(tiny(tiny_model_dir, "concat"), _args(tmp_path, plain_queries=True, max_steps=2), data)
    assert len(trainer.train_data) == 8
    assert [(e.instruction, e.query, e.positive) for e in trainer.train_data[4:]] == [
        ("", e.query, e.positive) for e in data
    ]
    assert trainer.train().global_step == 2
    assert len(Trainer(tiny(tiny_model_dir), _args(tmp_path), data).train_data) == 4
    with pytest.raises(ValueError, match="plain_queries"):
        _args(tmp_path, plain_queries="yes")


def test_foreign_instructions_add_a_foreign_record_per_record_and_train(tiny_model_dir, tmp_path):
    data = records(4)
    args = _args(tmp_path, foreign_instructions=True, plain_queries=True, max_steps=2)
    trainer = Trainer(tiny(tiny_model_dir, "concat"), args, data)
    assert len(trainer.train_data) == 12  # 4 records, 4 foreign (same query and passage: no extra plain), 4 plain
    foreign = trainer.train_data[4:8]
    assert [(e.query, e.positive) for e in foreign] == [(e.query, e.positive) for e in data]
    assert all(e.instruction != own.instruction and e.negatives for e, own in zip(foreign, data))
    assert trainer.train().global_step == 2
    with pytest.raises(ValueError, match="foreign_instructions"):
        _args(tmp_path, foreign_instructions=1)


def test_partial_checkpoint_folders_are_ignored(tmp_path):
    os.makedirs(tmp_path / ".checkpoint-5.tmp-abc")
    os.makedirs(tmp_path / "checkpoint-7")  # no trainer_state.pt: incomplete
    assert latest_checkpoint(tmp_path) is None


def test_training_arguments_name_the_bad_field(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        TrainingArguments(output_dir=str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="learning_rate"):
        TrainingArguments(output_dir=str(tmp_path), learning_rate=float("nan"))


def test_residual_fusion_projection_learns_from_zero_and_is_saved(tiny_model_dir, tmp_path):
    from inf_embed import InfEmbed

    model = tiny(tiny_model_dir, "residual")
    assert torch.count_nonzero(model.fusion.proj.weight) == 0
    out = Trainer(model, _args(tmp_path, max_steps=2), records(6), loss="multi:P+I").train()
    trained = model.fusion.proj.weight.detach().cpu()
    assert torch.count_nonzero(trained) > 0
    reloaded = InfEmbed.from_pretrained(out.model_path)
    assert reloaded.config.fusion == "residual"
    torch.testing.assert_close(reloaded.fusion.proj.weight, trained, rtol=0, atol=0)


def test_trainable_parameters_freeze_the_rest_of_the_backbone(tiny_model_dir, tmp_path):
    model = tiny(tiny_model_dir, "residual")
    before = _weights(model)
    Trainer(model, _args(tmp_path, trainable_parameters=r"attention\."), records(6), loss="multi:P+I+IQ").train()
    after = _weights(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    backbone_changed = {k for k in changed if k.startswith("backbone.")}
    assert backbone_changed and all("attention." in k for k in backbone_changed)
    assert "fusion.proj.weight" in changed  # parameters outside the backbone always train


def test_trainable_parameters_matching_nothing_is_an_error(tiny_model_dir, tmp_path):
    model = tiny(tiny_model_dir, "concat")
    with pytest.raises(ValueError, match="trainable_parameters.*matches no backbone parameter"):
        Trainer(model, _args(tmp_path, trainable_parameters="no-such-layer"), records(4), loss="uni:P").train()
    with pytest.raises(ValueError, match="trainable_parameters"):
        TrainingArguments(output_dir=str(tmp_path), trainable_parameters="(")


def test_head_learning_rate_applies_to_the_parameters_outside_the_backbone(tiny_model_dir, tmp_path):
    model = tiny(tiny_model_dir, "residual")
    trainer = Trainer(model, _args(tmp_path, head_learning_rate=5e-2), records(4), loss="multi:P+I")
    trainer._setup()
    head = {id(p) for p in model.fusion.parameters()}
    for group in trainer.optimizer.param_groups:
        is_head = {id(p) in head for p in group["params"]}
        assert len(is_head) == 1
        assert group["initial_lr"] == (5e-2 if is_head.pop() else 1e-3)  # before warm-up scaling


def test_poisoned_query_loss_gets_each_poisoned_query_its_records_positive(tiny_model_dir, tmp_path):
    model = tiny(tiny_model_dir, "concat").eval()
    loss = get_loss("multi:P+I+IQ+Q")
    text = build_text_batch(records(4), num_instruction_variants=3, generator=torch.Generator().manual_seed(0))
    assert len(text.negative_query_passages) == len(text.negative_queries) > 0
    by_query = {(r.instruction, r.query_negative): r.positive for r in records(4)}
    assert text.negative_query_passages == [by_query[pair] for pair in text.negative_queries]
    plan = plan_batch(model, text, loss)
    with torch.no_grad():
        inputs = make_head(model, plan, loss)(_Encoder(model)(plan.groups, plan.kinds))
    expected = model.encode_document(text.negative_query_passages, convert_to_tensor=True)
    torch.testing.assert_close(inputs["query_negative_passage_embeddings"], expected, rtol=1e-4, atol=1e-5)
    model.train()
    out = Trainer(model, _args(tmp_path, max_steps=2), records(6), loss=loss).train()
    assert out.global_step == 2 and torch.isfinite(torch.tensor(out.training_loss))


def _head_inputs(model, loss):
    """The text batch of records(4) and the loss inputs the trainer's head builds from it (no gradient)."""
    text = build_text_batch(records(4), num_instruction_variants=3, generator=torch.Generator().manual_seed(0))
    plan = plan_batch(model, text, loss)
    with torch.no_grad():
        return text, make_head(model, plan, loss)(_Encoder(model)(plan.groups, plan.kinds))


def test_poisoned_instruction_term_gets_each_instruction_negative_item_its_records_positive(tiny_model_dir, tmp_path):
    model = tiny(tiny_model_dir, "concat").eval()
    loss = get_loss("multi:P+I+IQ+IX+Q", weight=0.5, instruction_weight=1.0)
    text, inputs = _head_inputs(model, loss)
    by_record = {r.instruction_negative: r for r in records(4)}
    own = [i for i, kind in enumerate(text.kinds) if kind == "instruction_negative"]
    assert len(own) == 4 and inputs["poisoned_instruction_embeddings"].shape[0] == 4
    pairs = [(text.instructions[i], text.queries[i]) for i in own]
    expected_q = model.encode_query([q for _, q in pairs], instruction=[i for i, _ in pairs], convert_to_tensor=True)
    expected_own = model.encode_document(
        [by_record[i].instruction_negative_passage for i, _ in pairs], convert_to_tensor=True
    )
    expected_forbidden = model.encode_document([by_record[i].positive for i, _ in pairs], convert_to_tensor=True)
    torch.testing.assert_close(inputs["poisoned_instruction_embeddings"], expected_q, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(inputs["poisoned_instruction_passage_embeddings"], expected_own, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        inputs["poisoned_instruction_forbidden_embeddings"], expected_forbidden, rtol=1e-4, atol=1e-5
    )
    model.train()
    out = Trainer(model, _args(tmp_path, max_steps=2), records(6), loss=loss).train()
    assert out.global_step == 2 and torch.isfinite(torch.tensor(out.training_loss))


def test_head_learning_rate_must_be_a_positive_number(tmp_path):
    for bad in (0.0, -1e-3, float("nan"), "fast"):
        with pytest.raises(ValueError, match="head_learning_rate"):
            TrainingArguments(output_dir=str(tmp_path), head_learning_rate=bad)


def test_loss_options_reach_the_named_loss_and_bad_ones_name_the_field(tiny_model_dir, tmp_path):
    args = TrainingArguments(
        output_dir=str(tmp_path), loss="multi:P+I+IQ+IX+Q", loss_options="weight=0.25, instruction_weight=2"
    )
    assert args.loss_kwargs() == {"weight": 0.25, "instruction_weight": 2.0}
    trainer = Trainer(tiny(tiny_model_dir, "concat"), args, records(2))
    assert (trainer.loss.weight, trainer.loss.instruction_weight) == (0.25, 2.0)
    for bad in ("weight", "weight=x", "weight=inf", "1a=2", "weight=1,weight=2", 3):
        with pytest.raises(ValueError, match="loss_options"):
            TrainingArguments(output_dir=str(tmp_path), loss_options=bad)
    unknown = TrainingArguments(output_dir=str(tmp_path), loss="multi:P+I", loss_options="weight=1")
    with pytest.raises(ValueError, match="loss_options: loss 'multi:P\\+I' does not accept \\['weight'\\]"):
        Trainer(tiny(tiny_model_dir, "concat"), unknown, records(2))
    with pytest.raises(ValueError, match="loss_options: only applies"):
        Trainer(
            tiny(tiny_model_dir, "concat"),
            args,
            records(2),
            loss=get_loss("multi:P+I"),
        )


def test_poisoned_query_exclusion_is_each_poisoned_querys_record_hard_negative(tiny_model_dir, tmp_path):
    model = tiny(tiny_model_dir, "concat").eval()
    loss = get_loss("multi:P+I+IQ+Q", weight=1.0, exclude_record_hard_negative=1)
    text, inputs = _head_inputs(model, loss)
    by_query = {(r.instruction, r.query_negative): r for r in records(4)}
    expected = model.encode_document(
        [by_query[pair].instruction_negative_passage for pair in text.negative_queries], convert_to_tensor=True
    )
    assert inputs["query_negative_excluded_mask"].tolist() == [True] * len(text.negative_queries)
    torch.testing.assert_close(inputs["query_negative_excluded_embeddings"], expected, rtol=1e-4, atol=1e-5)
    model.train()
    out = Trainer(model, _args(tmp_path, max_steps=2), records(6), loss=loss).train()
    assert out.global_step == 2 and torch.isfinite(torch.tensor(out.training_loss))


def test_gated_fusion_training_embeddings_equal_encode_query_on_both_branches(tiny_model_dir, tmp_path):
    model = tiny(tiny_model_dir, "gated").eval()
    loss = get_loss("multi:P+I+IQ")
    text = build_text_batch(records(4), num_instruction_variants=3, generator=torch.Generator().manual_seed(0))
    alone = model.encode_document(list(text.queries) + list(text.instructions), convert_to_tensor=True)
    n = len(text.queries)
    cosines = torch.nn.functional.cosine_similarity(alone[:n], alone[n:], dim=-1)
    model.fusion.gate_threshold = float(cosines.median())  # some items keep the joined text, some fall back
    text, inputs = _head_inputs(model, loss)
    fits = model.fusion.fits(alone[:n], alone[n:])
    assert 0 < int(fits.sum()) < n
    queries = model.encode_query(text.queries, instruction=text.instructions, convert_to_tensor=True)
    torch.testing.assert_close(inputs["query_embeddings"], queries, rtol=1e-4, atol=1e-5)
    negatives = model.encode_query(
        [q for _, q in text.negative_queries], instruction=[i for i, _ in text.negative_queries], convert_to_tensor=True
    )
    torch.testing.assert_close(inputs["query_negative_embeddings"], negatives, rtol=1e-4, atol=1e-5)
    # and a training step runs, changing the backbone through both branches
    before = _weights(model)
    Trainer(model, _args(tmp_path, max_steps=2, loss="multi:P+I+IQ"), records(6)).train()
    after = _weights(model)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))


def test_passage_preservation_targets_are_the_starting_models_passages(tiny_model_dir, tmp_path):
    from inf_embed.losses import PassagePreservationLoss

    texts = sorted({p for r in records(6) for p in (r.positive, r.instruction_negative_passage)})
    model = tiny(tiny_model_dir, "concat")
    start = model.encode_document(texts, convert_to_tensor=True)
    args = _args(tmp_path, max_steps=2, loss="multi:P+I+IQ", preserve_weight=0.5, learning_rate=1e-2)
    trainer = Trainer(model, args, records(6))
    assert isinstance(trainer.loss, PassagePreservationLoss) and trainer.loss.weight == 0.5
    seen = []
    forward = trainer.loss.forward

    def spy(*a, **kw):
        seen.append((kw["preserved_passage_embeddings"].detach().clone(), kw["preservation_targets"].clone()))
        return forward(*a, **kw)

    trainer.loss.forward = spy
    trainer.train()
    assert len(seen) == 2
    for passages, targets in seen:
        assert passages.shape == targets.shape and passages.shape[0] > 0
        # every target is one of the starting model's passages (encode_document before training)
        assert bool(((targets @ start.T).max(dim=1).values > 1 - 1e-4).all())
    assert not torch.allclose(seen[1][0], seen[1][1], atol=1e-4)  # the trained passages moved off their targets
    # the term pulls back: a larger weight leaves the passages nearer their starting embeddings
    drift = {}
    for weight in (0.0, 50.0):
        trained = tiny(tiny_model_dir, "concat")
        run = _args(
            tmp_path / f"w{weight}", max_steps=3, loss="multi:P+I+IQ", preserve_weight=weight, learning_rate=1e-2
        )
        Trainer(trained, run, records(6)).train()
        after = trained.encode_document(texts, convert_to_tensor=True)
        drift[weight] = float((1 - (after * start).sum(-1)).mean())
    assert drift[50.0] < drift[0.0]


def test_preserve_weight_is_validated():
    with pytest.raises(ValueError, match="preserve_weight"):
        TrainingArguments(preserve_weight=-1.0)
    with pytest.raises(ValueError, match="preserve_weight"):
        TrainingArguments(preserve_weight=float("nan"))


def test_passage_preservation_gives_the_same_update_cached_and_uncached(tiny_model_dir, tmp_path):
    weights = []
    for chunk in (None, 3):
        model = tiny(tiny_model_dir, "concat")
        for module in model.modules():  # without dropout the chunked (GradCache) pass is exactly the full one
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            if isinstance(getattr(module, "dropout_prob", None), float):
                module.dropout_prob = 0.0
        args = _args(
            tmp_path / str(chunk),
            max_steps=3,
            warmup_steps=0,
            loss="multi:P+I+IQ",
            preserve_weight=2.0,
            cache_chunk_size=chunk,
        )
        Trainer(model, args, records(6)).train()
        weights.append(_weights(model))
    _assert_same(weights[0], weights[1], exact=False)


def test_document_delta_scale_pulls_the_trained_document_side_back(tiny_model_dir, tmp_path):
    model = tiny(tiny_model_dir, "concat")
    start = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    args = _args(tmp_path, max_steps=2, trainable_parameters=r"attention\.", document_delta_scale=0.25)
    Trainer(model, args, records(6)).train()
    assert model.config.document_delta_scale == 0.25
    anchors = model.document_anchor.anchors()
    assert anchors and all("attention." in name for name in anchors)
    for name, anchor in anchors.items():
        torch.testing.assert_close(anchor, start[name], rtol=0, atol=0)
    saved = InfEmbed(os.path.join(tmp_path, "model"))  # the final model is saved asymmetric
    texts = ["what is a neutrophil", "Neutrophils are white blood cells."]
    torch.testing.assert_close(
        saved.encode_document(texts, convert_to_tensor=True), model.encode_document(texts, convert_to_tensor=True)
    )
    with pytest.raises(ValueError, match="training updates one set of weights"):
        Trainer(model, _args(tmp_path), records(6))
    for bad in (-0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="document_delta_scale"):
            _args(tmp_path, document_delta_scale=bad)


def test_plain_query_side_is_saved_with_the_asymmetric_model(tiny_model_dir, tmp_path):
    model = tiny(tiny_model_dir, "concat")
    args = _args(
        tmp_path,
        max_steps=2,
        trainable_parameters=r"attention\.",
        document_delta_scale=0.5,
        plain_query_side="document",
    )
    Trainer(model, args, records(6)).train()
    saved = InfEmbed(os.path.join(tmp_path, "model"))
    assert saved.config.plain_query_side == "document"
    texts = ["what is a neutrophil", "Neutrophils are white blood cells."]
    # no prompts and short texts: a plain query is then encoded exactly as a document (same weights, same budget)
    torch.testing.assert_close(
        saved.encode_query(texts, convert_to_tensor=True), saved.encode_document(texts, convert_to_tensor=True)
    )
    assert not torch.allclose(
        saved.encode_query(texts, instruction="a definition", convert_to_tensor=True),
        saved.encode_document(texts, convert_to_tensor=True),
    )
    with pytest.raises(ValueError, match="plain_query_side: expected one of"):
        _args(tmp_path, document_delta_scale=0.5, plain_query_side="passage")
    with pytest.raises(ValueError, match="needs an asymmetric result"):
        _args(tmp_path, plain_query_side="document")
