"""GeniusRec: causality with every expert on, cached == uncached beams, valid generations, gates, packed view,
save/load and remote-code generation, optional experts, bad input."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from modeling_geniusrec import GeniusRecConfig, GeniusRecForSessionGeneration, HSTUConfig, HSTUForNextItemPrediction

VOCAB = 40


def tiny(text=12, image=6, **overrides):
    enc = HSTUConfig(vocab_size=VOCAB, hidden_size=16, qk_head_dim=8, v_head_dim=8, num_attention_heads=2,
                     max_position_embeddings=12, hidden_dropout_prob=0.0)
    cfg = GeniusRecConfig(encoder_config=enc, content_embedding_dims={"text": text, "image": image}, hidden_dropout_prob=0.0,
                          max_session_length=8, intermediate_size=32, **overrides)
    torch.manual_seed(0)
    model = GeniusRecForSessionGeneration(cfg).eval()
    with torch.no_grad():  # zero-initialised residual branches would hide the decoder and content paths
        for module in model.modules():
            if getattr(module, "zero_init", False):
                module.weight.normal_(0, 0.3)
    if text:
        model.model.set_item_embeddings("text", torch.randn(VOCAB, text))
    if image:
        model.model.set_item_embeddings("image", torch.randn(VOCAB, image))
    return model


def batch():
    g = torch.Generator().manual_seed(2)
    hist = torch.randint(4, 24, (3, 8), generator=g)
    ts = 1000 + torch.randint(0, 500, (3, 8), generator=g).cumsum(1)
    session = torch.tensor([[30, 31, 32, 33, 34], [35, 36, 37, 38, 39], [26, 27, 28, 29, 25]])  # never in the history
    labels = torch.cat([session, torch.full((3, 1), 2)], dim=1)
    return hist, ts, labels


def test_gate_weights_sum_to_one_and_experts_follow_the_config():
    model = tiny()
    hist, ts, labels = batch()
    out = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    assert out.gate_weights.shape == (3, 6, 3) and model.config.expert_names == ["behaviour", "text", "image"]
    torch.testing.assert_close(out.gate_weights.sum(-1), torch.ones(3, 6))
    no_image = tiny(image=0)
    assert set(no_image.model.experts) == {"behaviour", "text"} and not hasattr(no_image.model, "image_embeddings")
    assert not any("image" in name for name, _ in no_image.named_parameters())


@pytest.mark.parametrize("t", [0, 2, 4])
def test_target_never_reaches_the_state_that_predicts_it(t):
    model = tiny()
    hist, ts, labels = batch()
    base = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    target = labels[:, t]
    # 1) another item in the target's place: every logit up to position t is unchanged (positions after change)
    swapped = labels.clone()
    swapped[:, t] = torch.tensor([20, 21, 22])
    out = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=swapped)
    torch.testing.assert_close(out.logits[:, : t + 1], base.logits[:, : t + 1], rtol=0, atol=0)
    if t + 1 < labels.shape[1]:
        assert not torch.allclose(out.logits[:, t + 1], base.logits[:, t + 1])
    # 2) perturb the target's own ID, text and image rows: the states up to t are unchanged, and so is every logit
    #    except the target's own column (its item vector is what changed)
    with torch.no_grad():
        model.model.get_input_embeddings().weight[target] += 1.0
        model.model.text_embeddings[target] += 3.0
        model.model.image_embeddings[target] += 3.0
    out = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    torch.testing.assert_close(out.last_hidden_state[:, : t + 1], base.last_hidden_state[:, : t + 1], rtol=0, atol=1e-6)
    others = torch.ones(VOCAB, dtype=torch.bool)
    others[target] = False
    torch.testing.assert_close(out.logits[:, : t + 1, others], base.logits[:, : t + 1, others], rtol=0, atol=1e-5)
    if t + 1 < labels.shape[1]:
        assert not torch.allclose(out.last_hidden_state[:, t + 1], base.last_hidden_state[:, t + 1])


def test_experts_read_the_history():
    model = tiny()
    hist, ts, labels = batch()
    base = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    with torch.no_grad():
        model.model.text_embeddings[hist[0, 0]] += 5.0
    out = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    assert not torch.allclose(out.last_hidden_state[0, 0], base.last_hidden_state[0, 0])


@pytest.mark.parametrize("kwargs", [dict(num_beams=5, num_return_sequences=3), dict(num_beams=1),
                                    dict(do_sample=True, top_k=10, num_return_sequences=2)])
def test_cached_generation_equals_uncached(kwargs):
    model = tiny()
    hist, ts, _ = batch()
    torch.manual_seed(5)
    cached = model.generate(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, max_new_tokens=6, **kwargs)
    torch.manual_seed(5)
    uncached = model.generate(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, max_new_tokens=6, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_generated_items_are_valid_new_and_unique():
    model = tiny()
    hist, ts, _ = batch()
    out = model.generate(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=6, num_return_sequences=3, max_new_tokens=8,
                         min_new_tokens=8)
    assert out.shape == (9, 9) and (out[:, 0] == model.config.sep_token_id).all()
    for row, seq in enumerate(out[:, 1:]):
        items = seq.tolist()
        assert all(4 <= i < VOCAB for i in items), items
        assert len(set(items)) == len(items)
        assert not set(items) & set(hist[row // 3].tolist())


def test_packed_view_equals_seq2seq_log_probs_with_real_timestamps():
    model = tiny()
    hist, ts, labels = batch()
    request = ts[:, -1] + 60
    s2s = model(input_ids=hist, timestamps=ts, next_timestamps=request, labels=labels)
    logp = torch.log_softmax(s2s.logits, -1).gather(2, labels.unsqueeze(-1)).squeeze(-1)
    # pack with ragged lengths and right padding: row 1 has a shorter history; times are aligned to the packed row
    # (zeros at [SEP], session and pad positions: only the history's entries are read)
    rows = [torch.cat([hist[0], torch.tensor([1]), labels[0]]), torch.cat([hist[1, 3:], torch.tensor([1]), labels[1]]),
            torch.cat([hist[2], torch.tensor([1]), labels[2]])]
    row_times = [ts[0], ts[1, 3:], ts[2]]
    width = max(len(r) for r in rows)
    packed = torch.zeros(3, width, dtype=torch.long)
    packed_ts = torch.zeros(3, width, dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, row_times)):
        packed[i, : len(r)] = r
        packed_ts[i, : len(t)] = t
    out = model(input_ids=packed, attention_mask=packed != 0, timestamps=packed_ts, next_timestamps=request)
    packed_logp = torch.log_softmax(out.logits, -1)
    for i in (0, 2):
        sep = int((packed[i] == 1).nonzero()[0])
        got = packed_logp[i, sep : sep + labels.shape[1]].gather(1, labels[i].unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(got, logp[i], atol=1e-5, rtol=1e-5)
    # the times matter (so the equality above is not vacuous), and a packed call without them is refused
    shifted = model(input_ids=packed, attention_mask=packed != 0, timestamps=packed_ts * 3, next_timestamps=request * 3)
    assert not torch.allclose(shifted.logits[0], out.logits[0])
    with pytest.raises(ValueError, match="timestamps"):
        model(input_ids=packed, attention_mask=packed != 0)
    with pytest.raises(ValueError, match="next_timestamps"):
        model(input_ids=packed, attention_mask=packed != 0, timestamps=packed_ts)
    # a full-length session (max_session_length items + EOS) packs too: the trailing EOS is a label only
    full = torch.cat([hist[:1], torch.tensor([[1]]), torch.arange(24, 32).view(1, 8), torch.tensor([[2]])], dim=1)
    full_ts = torch.cat([ts[:1], torch.zeros(1, 10, dtype=torch.long)], dim=1)
    assert model.config.max_session_length == 8
    out_full = model(input_ids=full, timestamps=full_ts, next_timestamps=request[:1])
    assert out_full.logits.shape == (1, full.shape[1], VOCAB) and out_full.last_hidden_state[0, -1].abs().sum() == 0
    # TRL's fused head: base_model(...).last_hidden_state @ get_output_embeddings().weight.T * logit_scale
    fused = model.base_model(input_ids=hist, timestamps=ts, next_timestamps=request,
                             decoder_input_ids=torch.cat([torch.ones(3, 1, dtype=torch.long), labels[:, :-1]], 1)).last_hidden_state
    fused_logits = fused @ model.get_output_embeddings().weight.T * model.config.logit_scale
    torch.testing.assert_close(fused_logits, s2s.logits, atol=1e-5, rtol=1e-5)


def test_generate_refuses_a_history_without_times():
    model = tiny()
    hist, ts, _ = batch()
    with pytest.raises(ValueError, match="timestamps"):
        model.generate(input_ids=hist, num_beams=2, max_new_tokens=3)
    with pytest.raises(ValueError, match="next_timestamps"):
        model.generate(input_ids=hist, timestamps=ts, num_beams=2, max_new_tokens=3)


def test_save_load_and_remote_code_generate_identically(tmp_path):
    model = tiny()
    hist, ts, _ = batch()
    expected = model.generate(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=4, max_new_tokens=5)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ckpt").eval()
    assert torch.equal(loaded.generate(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=4, max_new_tokens=5), expected)
    torch.save({"hist": hist, "ts": ts}, tmp_path / "inputs.pt")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["modeling_geniusrec"] = None
        import torch
        from transformers import AutoModelForSeq2SeqLM
        model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True).eval()
        inputs = torch.load({str(tmp_path / 'inputs.pt')!r})
        torch.save(model.generate(input_ids=inputs["hist"], timestamps=inputs["ts"], next_timestamps=inputs["ts"][:, -1] + 60, num_beams=4,
                                  max_new_tokens=5), {str(tmp_path / 'out.pt')!r})
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_every_auto_map_entry_names_a_saved_file_that_defines_it(tmp_path):
    """Also for a checkpoint saved before the generation head moved to modeling_session_generation.py (its config
    names modeling_geniusrec.GeniusRecForSessionGeneration): re-saved, every entry resolves in the new files."""
    import json

    old_map = {"AutoConfig": "configuration_geniusrec.GeniusRecConfig", "AutoModel": "modeling_geniusrec.GeniusRecModel",
               "AutoModelForSeq2SeqLM": "modeling_geniusrec.GeniusRecForSessionGeneration",
               "AutoModelForCausalLM": "modeling_geniusrec.GeniusRecForSessionGeneration"}
    old = GeniusRecForSessionGeneration(GeniusRecConfig(**{**tiny().config.to_dict(), "auto_map": old_map}))
    for name, model in {"new": tiny(), "old": old}.items():
        model.save_pretrained(tmp_path / name)
        for auto, target in json.load(open(tmp_path / name / "config.json"))["auto_map"].items():
            module, cls = target.split(".")
            assert f"class {cls}(" in (tmp_path / name / f"{module}.py").read_text(), (name, auto, target)


def test_from_encoder_pretrained_starts_where_stage1_is(tmp_path):
    stage1 = HSTUForNextItemPrediction(tiny().config.encoder_config).eval()
    stage1.save_pretrained(tmp_path)
    model = GeniusRecForSessionGeneration.from_encoder_pretrained(str(tmp_path), num_hidden_layers=1, text_embedding_dim=12).eval()
    model.model.set_item_embeddings("text", torch.randn(VOCAB, 12))
    for name, param in stage1.model.state_dict().items():
        assert torch.equal(model.model.encoder.state_dict()[name], param)
    # the zero-initialised residual branches make the decoder's first step rank items exactly as stage 1
    hist, ts, labels = batch()
    first = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels).logits[:, 0, 4:]
    expected = stage1(hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, return_logits=True).logits[:, -1, 4:]
    torch.testing.assert_close(first, expected, atol=1e-4, rtol=1e-4)


def test_training_lowers_the_session_loss():
    model = tiny().train()
    hist, ts, labels = batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    text_before = model.model.text_embeddings.clone()
    losses = []
    for _ in range(25):
        loss = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert torch.equal(model.model.text_embeddings, text_before)  # frozen buffers


def test_bad_input_is_a_clear_error():
    model = tiny()
    hist, ts, labels = batch()
    with pytest.raises(ValueError, match="outside the item vocabulary"):
        model(input_ids=hist + 100, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    with pytest.raises(ValueError, match=r"text embeddings have shape \(40, 5\), expected \(40, 12\)"):
        model.model.set_item_embeddings("text", torch.zeros(VOCAB, 5))
    with pytest.raises(ValueError, match="no image table"):
        tiny(image=0).model.set_item_embeddings("image", torch.zeros(VOCAB, 6))
    with pytest.raises(ValueError, match=r"need a \[SEP\]"):
        model(input_ids=hist)


def test_next_item_loss_weight():
    model = tiny()
    hist, ts, labels = batch()
    out = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    plain = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten())
    torch.testing.assert_close(out.loss, plain + model.config.router_aux_loss_coef * out.aux_loss)
    model.config.next_item_loss_weight = 4.0
    token = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    expected = (4 * token[:, 0].sum() + token[:, 1:].sum()) / (4 * 3 + 5 * 3)
    torch.testing.assert_close(model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels).loss,
                               expected + model.config.router_aux_loss_coef * out.aux_loss)


def test_a_new_expert_is_one_registered_class_and_one_config_entry():
    from torch import nn

    from modeling_geniusrec.experts import EXPERT_REGISTRY, register_expert

    @register_expert("last_item_test")
    class LastItemExpert(nn.Module):
        """Reads the ID embedding of the newest session input (causal by construction)."""

        def __init__(self, config, name):
            super().__init__()
            self.proj = nn.Linear(config.hidden_size, config.hidden_size)

        def encode(self, model, input_ids):
            return None

        def forward(self, state, context):
            newest = context.session_ids[:, context.query_offset : context.query_offset + state.shape[1]]
            return self.proj(context.model.get_input_embeddings()(newest))

    try:
        model = tiny(image=0, expert_types={"behaviour": "behaviour", "text": "content", "last": "last_item_test"})
        assert model.config.expert_names == ["behaviour", "text", "last"] and "last" in model.model.experts
        hist, ts, labels = batch()
        out = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
        assert out.gate_weights.shape[-1] == 3
        gen = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=3, max_new_tokens=4)
        assert torch.equal(model.generate(**gen), model.generate(**gen, use_cache=False))
    finally:
        EXPERT_REGISTRY.pop("last_item_test")
    with pytest.raises(ValueError, match="unknown type"):
        tiny(image=0, expert_types={"behaviour": "behaviour", "x": "no_such_type"})


def test_old_content_keywords_are_still_accepted():
    enc = HSTUConfig(vocab_size=VOCAB, hidden_size=16, qk_head_dim=8, v_head_dim=8)
    old = GeniusRecConfig(encoder_config=enc, text_embedding_dim=12, image_embedding_dim=6)
    assert old.content_embedding_dims == {"text": 12, "image": 6} and old.expert_names == ["behaviour", "text", "image"]
    reloaded = GeniusRecConfig.from_dict({**old.to_dict(), "content_embedding_dims": {}, "expert_types": None, "text_embedding_dim": 12})
    assert reloaded.content_embedding_dims == {"text": 12} and reloaded.text_embedding_dim == 12


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attn_implementation_is_real_and_both_agree(tmp_path, implementation, monkeypatch):
    from modeling_geniusrec import decoder_layers as module

    tiny().save_pretrained(tmp_path)
    reference = GeniusRecForSessionGeneration.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    model = GeniusRecForSessionGeneration.from_pretrained(tmp_path, attn_implementation=implementation).eval()
    assert model.config._attn_implementation == implementation
    calls = []
    original = module.ATTENTION_FUNCTIONS[implementation]
    monkeypatch.setitem(module.ATTENTION_FUNCTIONS, implementation, lambda *a, **k: calls.append(1) or original(*a, **k))
    hist, ts, labels = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits, atol=1e-5, rtol=1e-5)
    assert calls  # the requested backend ran


@pytest.mark.parametrize("cache_name", ["cache", "past_key_values"])
def test_manual_cached_forward_equals_uncached(cache_name):
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    model = tiny()
    hist, ts, labels = batch()
    times = dict(timestamps=ts, next_timestamps=ts[:, -1] + 60)
    decoder = torch.cat([torch.ones(3, 1, dtype=torch.long), labels[:, :-1]], dim=1)  # [SEP, s_1, ..., s_T-1]
    full = model(input_ids=hist, decoder_input_ids=decoder, **times).logits
    encoder_outputs = model.get_encoder()(input_ids=hist, **times)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    steps = []
    for t in range(decoder.shape[1]):  # one new token per call, as a user stepping by hand would
        out = model(encoder_outputs=encoder_outputs, decoder_input_ids=decoder[:, t : t + 1], use_cache=True, **{cache_name: cache})
        cache = out.cache
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert model.config.use_cache is True


def test_generate_without_a_history_is_a_clear_error():
    with pytest.raises(ValueError, match="needs the history"):
        tiny().generate(num_beams=2, max_new_tokens=3)


def test_outputs_hidden_states_tuples_and_dict_generation():
    model = tiny()
    hist, ts, labels = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    out = model(**inputs, output_hidden_states=True)
    assert len(out.decoder_hidden_states) == model.config.num_hidden_layers + 1
    assert len(out.encoder_hidden_states) == model.config.encoder_config.num_hidden_layers + 1
    assert model(**inputs).decoder_hidden_states is None
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.loss)
    generated = model.generate(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=2, max_new_tokens=3,
                               return_dict_in_generate=True, output_hidden_states=True, output_scores=True)
    assert generated.sequences.shape[0] == 3 and generated.decoder_hidden_states is not None


class ReferenceBan:
    """Yesterday's ban processor, written out: copy the scores, ban specials (but EOS), the history repeated over
    the beams, and the session so far."""

    def __init__(self, config, history):
        self.config, self.history = config, history

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, [i for i in range(self.config.num_special_tokens) if i != self.config.eos_token_id]] = float("-inf")
        history = self.history.repeat_interleave(scores.shape[0] // self.history.shape[0], dim=0)
        scores.scatter_(1, history, float("-inf"))
        return scores.scatter_(1, input_ids, float("-inf"))


@pytest.mark.parametrize("kwargs", [dict(num_beams=5), dict(num_beams=4, num_return_sequences=2), dict(num_beams=1)])
def test_fast_ban_and_exact_length_decode_as_before(kwargs):
    """The one-mask-per-call ban processor and the EOS ban for exact-length sessions give the sessions of the old
    path (transformers' min-new-tokens processor + the per-step ban), token for token."""
    from transformers import GenerationMixin

    model = tiny()
    hist, ts, _ = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60)
    fast = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, **kwargs)
    old = GenerationMixin.generate(model, **inputs, logits_processor=[ReferenceBan(model.config, hist)], max_new_tokens=6,
                                   min_new_tokens=6, **kwargs)
    assert torch.equal(fast, old)
    assert not (fast[:, 1:] == model.config.eos_token_id).any()  # exactly 6 items


def test_cached_generation_uses_the_cache():
    """With the cache each decoding step feeds the decoder layers one new position; without it, the whole session so
    far (so a cache that silently stopped working would fail here, while outputs stayed equal)."""
    model = tiny()
    hist, ts, _ = batch()
    widths = []
    hook = model.model.decoder_layers[0].register_forward_hook(lambda module, args, output: widths.append(args[0].shape[1]))
    try:
        for use_cache in (True, False):
            widths.clear()
            model.generate(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=3, max_new_tokens=5, min_new_tokens=5,
                           use_cache=use_cache)
            assert widths == ([1] * 5 if use_cache else [1, 2, 3, 4, 5]), (use_cache, widths)
    finally:
        hook.remove()


def test_session_set_loss_by_hand():
    """At each position with an item label, the mean -log p of every item still to come; EOS and padding are no
    targets; the model adds it with session_set_loss_weight."""
    from modeling_geniusrec.modeling_session_generation import session_set_loss

    torch.manual_seed(0)
    scores = torch.randn(2, 4, 7)
    labels = torch.tensor([[4, 5, 6, 2], [6, 2, -100, -100]])  # EOS = 2
    lp = scores.log_softmax(-1)
    by_hand = [-(lp[0, 0, 4] + lp[0, 0, 5] + lp[0, 0, 6]) / 3, -(lp[0, 1, 5] + lp[0, 1, 6]) / 2, -lp[0, 2, 6], -lp[1, 0, 6]]
    torch.testing.assert_close(session_set_loss(lp, labels, 2), sum(by_hand) / 4)
    model = tiny()
    hist, ts, labels = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    plain = model(**inputs)
    model.config.session_set_loss_weight = 0.5
    torch.testing.assert_close(model(**inputs).loss, plain.loss + 0.5 * session_set_loss(plain.logits.log_softmax(-1), labels, 2))


@pytest.mark.parametrize("kwargs", [dict(num_beams=5), dict(num_beams=4, num_return_sequences=2), dict(do_sample=True, num_return_sequences=3)])
def test_beams_read_each_history_once_and_decode_as_before(kwargs, monkeypatch):
    """generate() keeps one encoding per user and the decoder groups each user's beams over it (cross-attention and
    the content experts read each history's keys once). The sessions are those of the old path, which expanded the
    encoding over the beams, token for token."""
    from transformers import GenerationMixin

    model = tiny()
    hist, ts, _ = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, max_new_tokens=6, min_new_tokens=6, **kwargs)
    key_rows = []
    hook = model.model.decoder_layers[0].cross_attn.register_forward_hook(lambda m, args, kw, out: key_rows.append(kw["key_value"][0].shape[0]),
                                                                          with_kwargs=True)
    torch.manual_seed(5)
    grouped = model.generate(**inputs)
    assert set(key_rows) == {hist.shape[0]}  # one row of keys per user, not per beam
    key_rows.clear()
    monkeypatch.setattr(type(model), "_expand_inputs_for_generation", GenerationMixin._expand_inputs_for_generation)
    torch.manual_seed(5)
    expanded = model.generate(**inputs)
    hook.remove()
    expand = kwargs.get("num_beams") or kwargs["num_return_sequences"]
    assert set(key_rows) == {hist.shape[0] * expand}  # the old path: a copy of the keys per beam
    assert torch.equal(grouped, expanded)


def test_encoding_by_length_equals_the_batched_pass(monkeypatch):
    """Inference encodes histories sorted by length, in chunks cut to their longest row: the same states as one
    batched pass (right padding), the plain pass for left padding, and the same generated sessions."""
    model = tiny()
    monkeypatch.setattr(type(model.model), "ENCODE_CHUNK_ROWS", 3)
    g = torch.Generator().manual_seed(7)
    lengths = torch.tensor([12, 3, 7, 1, 12, 5, 9, 2, 11, 4])
    hist = torch.randint(4, 30, (10, 12), generator=g) * (torch.arange(12) < lengths.unsqueeze(1))
    ts = 1000 + torch.randint(1, 500, (10, 12), generator=g).cumsum(1)
    times = dict(timestamps=ts, next_timestamps=ts[:, -1] + 60)
    with torch.no_grad():
        chunked = model.model.encode(hist, **times)
        plain = model.model.encoder(hist, attention_mask=hist != 0, **times).last_hidden_state
        calls = []
        hook = model.model.encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
        model.model.encode(hist, **times)
        hook.remove()
    assert [shape[0] for shape in calls] == [3, 3, 3, 1] and max(shape[1] for shape in calls[:1]) <= 3  # shortest rows first, cut
    torch.testing.assert_close(chunked.user_embedding, plain[torch.arange(10), lengths - 1], rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked.last_hidden_state, model.model.memory_projection(plain), rtol=0, atol=1e-5)
    left = torch.stack([row.roll(int(12 - n)) for row, n in zip(hist, lengths)])  # left padded: the plain pass, exactly
    left_ts = torch.stack([row.roll(int(12 - n)) for row, n in zip(ts, lengths)])
    with torch.no_grad():
        left_plain = model.model.encoder(left, attention_mask=left != 0, timestamps=left_ts, next_timestamps=ts[:, -1] + 60).last_hidden_state
        assert torch.equal(model.model.encode(left, timestamps=left_ts, next_timestamps=ts[:, -1] + 60).user_embedding, left_plain[:, -1])
    sessions = model.generate(input_ids=hist, **times, num_beams=3, max_new_tokens=4, min_new_tokens=4)
    monkeypatch.setattr(type(model.model), "ENCODE_CHUNK_ROWS", 0)  # off: one batched pass
    calls.clear()
    hook = model.model.encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    assert torch.equal(sessions, model.generate(input_ids=hist, **times, num_beams=3, max_new_tokens=4, min_new_tokens=4))
    hook.remove()
    assert calls == [hist.shape]


def test_tune_cpu_allocator_is_optional(monkeypatch):
    import platform

    from train.runner import tune_cpu_allocator

    assert tune_cpu_allocator(False) is False
    monkeypatch.setenv("GENIUSREC_TUNE_MALLOC", "0")
    assert tune_cpu_allocator() is False
    monkeypatch.delenv("GENIUSREC_TUNE_MALLOC")
    assert tune_cpu_allocator() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_item_bias_shifts_rankings_and_beams_as_written():
    """A per-item bias (the popularity penalty) is added to every step's scores: with a large bias on one item it is
    always generated and ranked first; the first-step ranking adds it before the top-k."""
    from modeling_geniusrec.generation import ItemBiasLogitsProcessor

    model = tiny()
    hist, ts, _ = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=3, max_new_tokens=4, min_new_tokens=4)
    bias = torch.zeros(VOCAB)
    bias[33] = 100.0
    sessions = model.generate(**inputs, logits_processor=[ItemBiasLogitsProcessor(bias)])
    assert (sessions[:, 1:] == 33).any(1).all()  # every session has it (once: repeats stay banned)
    states = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    plain_scores, plain = model.top_k_items(states, 5)
    scores, ranked = model.top_k_items(states, 5, item_bias=-bias)  # a large penalty removes it from every list
    assert not (ranked == 33).any() and (ranked[:, 0] == 33).sum() == 0
    scores, ranked = model.top_k_items(states, 5, item_bias=bias)
    assert (ranked[:, 0] == 33).all()
    with pytest.raises(ValueError, match="item_bias must have shape"):
        model.top_k_items(states, 5, item_bias=bias[:-1])


def test_first_step_mix_moves_beams_toward_the_first_step_list():
    """weight 0 is plain beam search; a large weight makes the session the first step's top-k set; the session's
    score is sum_t log p_t + weight * sum_t log p_1 (checked against the beam's own score)."""
    from modeling_geniusrec.generation import FirstStepMixLogitsProcessor

    model = tiny()
    hist, ts, _ = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=4, max_new_tokens=4, min_new_tokens=4)
    plain = model.generate(**inputs)
    assert torch.equal(plain, model.generate(**inputs, logits_processor=[FirstStepMixLogitsProcessor(0.0, 4)]))
    mixed = model.generate(**inputs, logits_processor=[FirstStepMixLogitsProcessor(1000.0, 4)])
    first = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, decoder_input_ids=mixed[:, :1]).logits[:, 0]
    first[:, : model.config.num_special_tokens] = float("-inf")
    first.scatter_(1, hist, float("-inf"))
    top = first.topk(4, dim=1).indices
    assert all(set(m.tolist()) == set(t.tolist()) for m, t in zip(mixed[:, 1:], top))
    out = model.generate(**inputs, logits_processor=[FirstStepMixLogitsProcessor(0.5, 4)], return_dict_in_generate=True, output_scores=True)
    decoder = out.sequences[:, :-1]
    logp = model(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, decoder_input_ids=decoder).logits.log_softmax(-1)
    items = out.sequences[:, 1:]
    per_step = logp.gather(2, items.unsqueeze(-1)).squeeze(-1)  # log p_t(s_t)
    first_step = logp[:, 0].gather(1, items)  # log p_1(s_t)
    torch.testing.assert_close(out.sequences_scores * 4, (per_step + 0.5 * first_step).sum(1), rtol=1e-4, atol=1e-4)


def test_encoder_query_weight_leans_sessions_toward_the_encoder_ranking():
    """generate(encoder_query_weight=w) scores items with state_t + w * u: 0 is the plain decoding; a huge weight
    gives the encoder's own top-k set (the bias is the same at every step, so the decoder still orders it); the
    setting does not outlive the call."""
    model = tiny()
    hist, ts, _ = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=3, max_new_tokens=4, min_new_tokens=4)
    plain = model.generate(**inputs)
    assert torch.equal(plain, model.generate(**inputs, encoder_query_weight=0.0))
    leaning = model.generate(**inputs, encoder_query_weight=1e4)
    with torch.no_grad():
        user = model.model.encode(hist, timestamps=ts, next_timestamps=ts[:, -1] + 60).user_embedding
    top = model.top_k_items(user, 4, exclude=hist)[1]
    assert torch.equal(leaning[:, 1:].sort(1).values, top.sort(1).values) and not torch.equal(plain, leaning)
    assert torch.equal(plain, model.generate(**inputs))  # nothing of the call stays on the model


def test_encoder_loss_by_hand():
    """encoder_loss_weight adds stage 1's loss on the encoder inside GeniusRec (training only): history position t
    predicts history item t + 1, the last position the session's first item; full softmax here, so by hand."""
    model = tiny(text=0, image=0)
    model.config.encoder_config.loss_type = "full_softmax"
    hist, ts, labels = batch()
    hist = hist.clone()
    hist[0, 6:] = 0  # a right-padded row: its last real position is 5
    inputs = dict(input_ids=hist, attention_mask=hist != 0, timestamps=ts, next_timestamps=ts[:, -1] + 60, labels=labels)
    model.train()
    plain = model(**inputs).loss
    model.config.encoder_loss_weight = 0.5
    with_encoder = model(**inputs).loss
    states = model.model.encoder(hist, attention_mask=hist != 0, timestamps=ts, next_timestamps=ts[:, -1] + 60).last_hidden_state
    items = torch.nn.functional.normalize(model.model.encoder.embeddings.item_matrix(), dim=-1)
    scale, special = model.config.encoder_config.logit_scale, model.config.num_special_tokens
    terms = []
    for row in range(3):
        n = int((hist[row] != 0).sum())
        targets = [int(hist[row, t + 1]) for t in range(n - 1)] + [int(labels[row, 0])]
        for t, target in enumerate(targets):
            logits = states[row, t] @ items[special:].T * scale
            terms.append(torch.nn.functional.cross_entropy(logits.unsqueeze(0), torch.tensor([target - special])))
    torch.testing.assert_close(with_encoder, plain + 0.5 * torch.stack(terms).mean())
    model.eval()
    torch.testing.assert_close(model(**inputs).loss, plain)  # evaluation loss: the session loss only
    with pytest.raises(ValueError, match="encoder_loss_weight must be >= 0"):
        GeniusRecConfig(encoder_config=model.config.encoder_config, encoder_loss_weight=-1)


def test_alternative_sessions_differ_in_their_items():
    """num_return_sequences=3 alone returns the search's 3 best sequences, which share items; with
    shared_item_penalty=inf the 3 sessions of a user share none, and the first is the plain num_return_sequences=1
    session. A finite penalty lowers the overlap without banning."""
    model = tiny()
    hist, ts, _ = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=4, max_new_tokens=4, min_new_tokens=4)
    first = model.generate(**inputs)
    plain = model.generate(**inputs, num_return_sequences=3)
    alternatives = model.generate(**inputs, num_return_sequences=3, shared_item_penalty=float("inf"))
    assert alternatives.shape == (9, 5)
    torch.testing.assert_close(alternatives[0::3], first)

    def overlaps(sequences):
        sets = [set(row[1:].tolist()) for row in sequences]
        return [len(sets[u * 3 + i] & sets[u * 3 + j]) for u in range(3) for i in range(3) for j in range(i + 1, 3)]

    assert max(overlaps(plain)) > 0  # the beams' best sequences do share items
    assert max(overlaps(alternatives)) == 0  # fails if the returned sessions share any item
    for row in range(9):  # still valid sessions: no history item, no repeat
        items = alternatives[row, 1:].tolist()
        assert len(set(items)) == 4 and not set(items) & set(hist[row // 3].tolist())
    soft = model.generate(**inputs, num_return_sequences=3, shared_item_penalty=1.0)
    assert sum(overlaps(soft)) <= sum(overlaps(plain))
    with pytest.raises(ValueError, match="token ids only"):
        model.generate(**inputs, num_return_sequences=3, shared_item_penalty=1.0, return_dict_in_generate=True)
    with pytest.raises(ValueError, match="must be > 0"):
        model.generate(**inputs, num_return_sequences=3, shared_item_penalty=0.0)


def test_generate_from_four_threads_equals_one_after_another():
    """Per-call options (encoder_query_weight, the frozen item matrix) travel with the call: four threads generating
    with different options on one model get exactly the sessions they get one after another."""
    import threading

    model = tiny()
    hist, ts, _ = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=3, max_new_tokens=4, min_new_tokens=4)
    weights = [0.0, 3.0, 0.0, 3.0] * 3
    expected = [model.generate(**inputs, encoder_query_weight=w) for w in weights]
    assert not torch.equal(expected[0], expected[1])  # the option changes the sessions here, so a leak would show
    got = [None] * len(weights)

    def work(index):
        got[index] = model.generate(**inputs, encoder_query_weight=weights[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(weights))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index, (a, b) in enumerate(zip(expected, got)):
        assert torch.equal(a, b), index


def test_forward_view_can_be_named():
    """view="auto" keeps TRL's call (only input_ids -> packed); naming a view makes the switch explicit and refuses
    the other view's inputs."""
    model = tiny()
    hist, ts, labels = batch()
    request = ts[:, -1] + 60
    packed = torch.cat([hist, torch.ones(3, 1, dtype=torch.long), labels[:, :-1]], dim=1)
    packed_ts = torch.cat([ts, torch.zeros(3, labels.shape[1], dtype=torch.long)], dim=1)
    auto = model(input_ids=packed, timestamps=packed_ts, next_timestamps=request)
    named = model(input_ids=packed, timestamps=packed_ts, next_timestamps=request, view="packed")
    torch.testing.assert_close(auto.logits, named.logits)
    torch.testing.assert_close(model(input_ids=hist, timestamps=ts, next_timestamps=request, labels=labels, view="seq2seq").logits,
                               model(input_ids=hist, timestamps=ts, next_timestamps=request, labels=labels).logits)
    with pytest.raises(ValueError, match="view='seq2seq' needs decoder_input_ids"):
        model(input_ids=packed, timestamps=packed_ts, next_timestamps=request, view="seq2seq")
    with pytest.raises(ValueError, match="view='packed' takes input_ids rows"):
        model(input_ids=hist, timestamps=ts, next_timestamps=request, labels=labels, view="packed")
    with pytest.raises(ValueError, match="view must be"):
        model.model(input_ids=packed, timestamps=packed_ts, next_timestamps=request, view="causal")


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("kwargs", [dict(num_beams=5), dict(num_beams=4, num_return_sequences=3),
                                    dict(num_beams=3, encoder_query_weight=1.5, mix=0.7), dict(num_beams=6, item_bias=True)])
def test_lean_beam_search_returns_what_transformers_returns(kwargs, use_cache, monkeypatch):
    """Sessions of a fixed length (EOS banned) take the lean beam search (first step once per user, preallocated
    cache, no finished-hypothesis bookkeeping); its sequences equal transformers' beam search token for token, with
    and without the cache, several returned sequences, the encoder query, the first-step mix and an item bias."""
    import modeling_geniusrec.modeling_session_generation as module
    from modeling_geniusrec.generation import FirstStepMixLogitsProcessor, ItemBiasLogitsProcessor

    model = tiny()
    hist, ts, _ = batch()
    kwargs = dict(kwargs)
    mix, bias = kwargs.pop("mix", None), kwargs.pop("item_bias", None)

    def processors():
        out = [FirstStepMixLogitsProcessor(mix, kwargs["num_beams"])] if mix else []
        return out + ([ItemBiasLogitsProcessor(torch.linspace(0, 2, VOCAB))] if bias else [])

    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, max_new_tokens=6, min_new_tokens=6, use_cache=use_cache,
                  **kwargs)
    taken = []
    lean = module.exact_length_beam_search
    monkeypatch.setattr(module, "exact_length_beam_search", lambda *a, **k: taken.append(1) or lean(*a, **k))
    fast = model.generate(**inputs, logits_processor=processors())
    assert taken == [1]
    monkeypatch.setattr(module, "takes_lean_path", lambda *a, **k: False)
    reference = model.generate(**inputs, logits_processor=processors())
    assert len(taken) == 1 and torch.equal(fast, reference)
    assert fast.shape == (hist.shape[0] * kwargs.get("num_return_sequences", 1), 7)


@pytest.mark.parametrize("kwargs", [dict(min_new_tokens=2), dict(do_sample=True), dict(return_dict_in_generate=True, output_scores=True),
                                    dict(num_beams=1)])
def test_lean_beam_search_is_taken_only_where_it_covers_the_call(kwargs, monkeypatch):
    """EOS allowed (sessions of any length), sampling, per-step outputs, greedy search: transformers' own loop."""
    import modeling_geniusrec.modeling_session_generation as module

    model = tiny()
    hist, ts, _ = batch()
    taken = []
    monkeypatch.setattr(module, "exact_length_beam_search", lambda *a, **k: taken.append(1))
    inputs = {**dict(num_beams=3, max_new_tokens=4, min_new_tokens=4), **kwargs}
    model.generate(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, **inputs)
    assert taken == []


def test_session_beam_cache_writes_in_place_and_reorders_like_a_dynamic_cache():
    from transformers.cache_utils import DynamicCache

    from modeling_geniusrec.beam_search import SessionBeamCache

    g = torch.Generator().manual_seed(0)
    ours, theirs = SessionBeamCache(max_length=4), DynamicCache()
    for rows in ([2, 0, 0, 1, 3, 3], [5, 4, 3, 2, 1, 0]):
        k, v = torch.randn(6, 2, 1, 3, generator=g), torch.randn(6, 2, 1, 3, generator=g)
        for layer in (0, 1):
            a, b = ours.update(k, v, layer), theirs.update(k, v, layer)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        ours.reorder(torch.tensor(rows))
        theirs.reorder_cache(torch.tensor(rows))
    assert ours.get_seq_length() == theirs.get_seq_length() == 2
    with pytest.raises(ValueError, match="holds 4 positions"):
        ours.update(torch.randn(6, 2, 3, 3), torch.randn(6, 2, 3, 3), 0)


def restricted_to(model, candidates: torch.Tensor, history: torch.Tensor):
    """A forward hook that sets every logit outside each user's candidates `(users, C)`, history `(users, L)` and the
    special tokens to -inf (over that user's consecutive rows): a full-catalog decode whose log-softmax counts only
    those (the ban processor then bans the history and the special tokens, as in every decode)."""
    allowed = torch.zeros(candidates.shape[0], model.config.vocab_size, dtype=torch.bool).scatter_(1, candidates, True)
    allowed.scatter_(1, history, True)
    allowed[:, : model.config.num_special_tokens] = True

    def hook(module, args, output):
        rows = output.logits.shape[0]
        mask = allowed.repeat_interleave(rows // allowed.shape[0], dim=0)
        output.logits.masked_fill_(~mask.unsqueeze(1), float("-inf"))
        return output

    return model.register_forward_hook(hook)


@pytest.mark.parametrize("options", [{}, {"use_cache": False}, {"num_return_sequences": 2}, {"encoder_query_weight": 1.5},
                                     {"bias": True}, {"first_step_mix": 0.5}, {"shared_item_penalty": float("inf"), "num_return_sequences": 2}])
def test_candidate_decode_equals_the_full_decode_restricted_to_the_candidates(options, monkeypatch):
    """`generate(candidate_count=C)` is exactly beam search over each user's C retrieved items: the same sessions as the
    full-catalog search whose log-softmax counts only the candidates, the history and the special tokens, candidates =
    the first step's top C (history left out, item bias added), for every option the candidate space supports; with
    every item a candidate, the full decode itself."""
    from modeling_geniusrec.beam_search import NormaliserExtras
    from modeling_geniusrec.generation import FirstStepMixLogitsProcessor, ItemBiasLogitsProcessor

    monkeypatch.setattr(NormaliserExtras, "GROUP_USERS", 2)  # the 3 users' extra items in two groups of their own widths
    model = tiny()
    hist, ts, _ = batch()
    hist[1, 4:] = 0  # users with histories of different lengths (padding), as in a real batch
    options = dict(options)
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, num_beams=4, max_new_tokens=5, min_new_tokens=5)
    bias = torch.linspace(-2, 2, VOCAB) if options.pop("bias", False) else None
    mix = options.pop("first_step_mix", 0.0)
    processors = lambda: ([ItemBiasLogitsProcessor(bias)] if bias is not None else []) + (  # noqa: E731
        [FirstStepMixLogitsProcessor(mix, 4)] if mix else [])
    count = 12
    encoded = model.get_encoder()(hist, timestamps=ts, next_timestamps=ts[:, -1] + 60)
    start = torch.full((3, 1), model.config.decoder_start_token_id)
    state = model.session_states(start, encoded, encoder_query_weight=options.get("encoder_query_weight", 0.0))[:, -1]
    candidates = model.top_k_items(state, count, exclude=hist, item_bias=bias)[1]
    fast = model.generate(**inputs, candidate_count=count, logits_processor=processors(), **options)
    handle = restricted_to(model, candidates, hist)
    try:
        reference = model.generate(**inputs, logits_processor=processors(), **options)
    finally:
        handle.remove()
    assert torch.equal(fast, reference)
    per_user = fast.shape[0] // 3
    for row, session in enumerate(fast[:, 1:].tolist()):  # every item a candidate of its user, none from the history
        assert set(session) <= set(candidates[row // per_user].tolist()) and not set(session) & set(hist[row // per_user].tolist())
    full = model.generate(**inputs, logits_processor=processors(), **options)  # the hook is gone: the full decode
    everything = model.generate(**inputs, candidate_count=VOCAB - 4, logits_processor=processors(), **options)  # all items retrieved
    assert torch.equal(everything, full)


def test_candidate_count_refuses_what_it_cannot_decode():
    from transformers import LogitsProcessor

    class Custom(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores

    model = tiny()
    hist, ts, _ = batch()
    inputs = dict(input_ids=hist, timestamps=ts, next_timestamps=ts[:, -1] + 60, max_new_tokens=5)
    for kwargs, message in [(dict(num_beams=4, min_new_tokens=5, candidate_count=8), r"= \[9, 36\], got 8"),
                            (dict(num_beams=4, min_new_tokens=5, candidate_count=12.0), "must be an int"),
                            (dict(num_beams=4, candidate_count=12), "min_new_tokens equal to max_new_tokens"),
                            (dict(num_beams=1, min_new_tokens=5, candidate_count=12), "num_beams >= 2"),
                            (dict(num_beams=4, min_new_tokens=5, candidate_count=12, logits_processor=[Custom()]), "cannot apply Custom"),
                            (dict(num_beams=4, min_new_tokens=5, candidate_count=12, output_scores=True, return_dict_in_generate=True),
                             "fixed-length sessions by beam search only")]:
        with pytest.raises(ValueError, match=message):
            model.generate(**inputs, **kwargs)
