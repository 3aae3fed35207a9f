"""HSTU encoder: the paper's math, causality, padding, save/load, training, bad input."""

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from modeling_geniusrec import HSTUConfig, HSTUForNextItemPrediction, HSTUModel, SASRecConfig, SASRecForNextItemPrediction

VOCAB, MAXLEN = 40, 12


def tiny_config(**overrides):
    args = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, qk_head_dim=8, v_head_dim=6,
                max_position_embeddings=MAXLEN, hidden_dropout_prob=0.0, num_negatives=16)
    args.update(overrides)
    return HSTUConfig(**args)


def request_time(ts):
    """A request time `(B,)` after every event of the batch, the same for a row alone or padded in a batch."""
    return torch.full((ts.shape[0],), 2_000_000_000, dtype=torch.long)


def random_batch(batch=3, length=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (batch, length), generator=g)
    gaps = torch.randint(0, 5000, (batch, length), generator=g)
    gaps[:, 3] = 0  # a tie in time
    ts = 1_000_000 + gaps.cumsum(1)
    return ids, ts


def randomize_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias_weight" in name:
                p.normal_(0, 0.5)


def loop_reference(model: HSTUModel, ids, ts, next_ts=None):
    """The paper's formula computed position by position with Python loops (no masks, no batching)."""
    cfg = model.config
    out = []
    for b in range(ids.shape[0]):
        n = ids.shape[1]
        E, P = model.embeddings.item_embeddings.weight, model.embeddings.position_embeddings.weight
        x = [E[ids[b, i]] * math.sqrt(cfg.hidden_size) + P[i] for i in range(n)]
        for layer in model.layers:
            new = []
            H, dq, dv = cfg.num_attention_heads, cfg.qk_head_dim, cfg.v_head_dim
            proj = [F.silu(layer.uvqk.weight @ F.layer_norm(x[i], (cfg.hidden_size,), eps=cfg.layer_norm_eps)) for i in range(n)]
            u = [p[: H * dv] for p in proj]
            v = [p[H * dv : 2 * H * dv] for p in proj]
            q = [p[2 * H * dv : 2 * H * dv + H * dq] for p in proj]
            k = [p[2 * H * dv + H * dq :] for p in proj]
            for i in range(n):
                if i + 1 < n:
                    t_query = ts[b, i + 1]
                else:
                    t_query = next_ts[b] if next_ts is not None else ts[b, i]
                heads = []
                for h in range(H):
                    acc = torch.zeros(dv)
                    for j in range(i + 1):
                        delta = max(abs(int(t_query) - int(ts[b, j])), 1)
                        bucket = min(max(math.floor(math.log(delta) / cfg.time_bucket_scale), 0), cfg.num_time_buckets)
                        score = q[i][h * dq : (h + 1) * dq] @ k[j][h * dq : (h + 1) * dq]
                        score = score + layer.relative_bias.position_bias_weight[cfg.max_position_embeddings - 1 + j - i]
                        score = score + layer.relative_bias.time_bias_weight[bucket]
                        acc = acc + F.silu(score) / cfg.max_position_embeddings * v[j][h * dv : (h + 1) * dv]
                    heads.append(acc)
                attn = F.layer_norm(torch.cat(heads), (H * dv,), eps=cfg.layer_norm_eps)
                new.append(x[i] + layer.output.weight @ (u[i] * attn) + layer.output.bias)
            x = new
        out.append(torch.stack([F.normalize(v, dim=0) for v in x]))
    return torch.stack(out)


def test_attention_matches_loop_reference():
    model = HSTUModel(tiny_config()).eval()
    randomize_biases(model)
    ids, ts = random_batch(length=7)
    next_ts = ts[:, -1] + 12345
    fast = model(ids, timestamps=ts, next_timestamps=next_ts).last_hidden_state
    with torch.no_grad():
        slow = loop_reference(model, ids, ts, next_ts)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def test_time_buckets_reach_many_values():
    """The reference check above only means something if the batch spans several buckets."""
    from modeling_geniusrec.modeling_hstu import time_buckets

    _, ts = random_batch()
    buckets = time_buckets(ts, ts, 128, 0.301)
    assert len(buckets.unique()) >= 5
    assert int(time_buckets(torch.tensor([[0]]), torch.tensor([[10**18]]), 128, 0.301).max()) == 128


@pytest.mark.parametrize("num_buckets, scale", [(128, 0.301), (64, 0.5), (10, 1.7)])
def test_time_buckets_equal_the_float64_formula_at_every_threshold(num_buckets, scale):
    """The bucketize path gives the definition's bucket, bit for bit, on both sides of every bucket boundary and on
    random deltas up to 2^62 (it replaced a float64 log over every pair)."""
    from modeling_geniusrec.modeling_hstu import _bucket_formula, _bucket_thresholds, time_buckets

    thresholds = [t for t in _bucket_thresholds(num_buckets, scale).tolist() if t < 2**62]
    probes = sorted({max(d, 0) for t in thresholds for d in (t - 2, t - 1, t, t + 1)} | {0, 1, 2})
    g = torch.Generator().manual_seed(0)
    deltas = torch.cat([torch.tensor(probes), torch.randint(0, 2**62, (2000,), generator=g), torch.randint(0, 10**9, (2000,), generator=g)])
    fast = time_buckets(deltas.view(1, -1), torch.zeros(1, 1, dtype=torch.long), num_buckets, scale).view(-1)
    slow = _bucket_formula(deltas.clamp(min=1), num_buckets, scale)
    assert torch.equal(fast, slow)
    assert len(fast.unique()) > num_buckets // 2


@pytest.mark.parametrize("use_next_event_time", [False, True])
def test_causality(use_next_event_time):
    model = HSTUModel(tiny_config(use_next_event_time=use_next_event_time)).eval()
    randomize_biases(model)
    ids, ts = random_batch()
    base = model(ids, timestamps=ts, next_timestamps=request_time(ts)).last_hidden_state
    for j in range(1, ids.shape[1]):
        ids2 = ids.clone()
        ids2[:, j] = (ids2[:, j] - 4 + 7) % (VOCAB - 4) + 4
        out = model(ids2, timestamps=ts, next_timestamps=request_time(ts)).last_hidden_state
        torch.testing.assert_close(out[:, :j], base[:, :j])
        assert not torch.allclose(out[:, j], base[:, j])
        ts2 = ts.clone()
        ts2[:, j:] += 10**6  # move event j (and after, to keep time ordered) far away
        out = model(ids, timestamps=ts2, next_timestamps=request_time(ts2)).last_hidden_state
        # with next-event timing the query at j-1 is timed at t_j (the reference design): it may change
        seen = j - 1 if use_next_event_time else j
        torch.testing.assert_close(out[:, :seen], base[:, :seen])


@pytest.mark.parametrize("normalization", ["padded", "length", "causal"])
def test_padding_left_and_right_equals_row_alone(normalization):
    model = HSTUModel(tiny_config(attention_normalization=normalization)).eval()
    randomize_biases(model)
    ids, ts = random_batch(batch=2, length=8)
    lengths = [8, 5]
    for side in ("left", "right"):
        batch_ids = torch.zeros(2, 8, dtype=torch.long)
        batch_ts = torch.zeros(2, 8, dtype=torch.long)
        for r, n in enumerate(lengths):
            sl = slice(8 - n, 8) if side == "left" else slice(0, n)
            batch_ids[r, sl], batch_ts[r, sl] = ids[r, :n], ts[r, :n]
        out = model(batch_ids, attention_mask=batch_ids != 0, timestamps=batch_ts, next_timestamps=request_time(batch_ts)).last_hidden_state
        for r, n in enumerate(lengths):
            alone = model(ids[r : r + 1, :n], timestamps=ts[r : r + 1, :n], next_timestamps=request_time(ts[r : r + 1])).last_hidden_state[0]
            sl = slice(8 - n, 8) if side == "left" else slice(0, n)
            torch.testing.assert_close(out[r, sl], alone, atol=1e-5, rtol=1e-5)
            assert out[r][batch_ids[r] == 0].abs().sum() == 0


def test_save_load_and_auto_classes(tmp_path):
    model = HSTUForNextItemPrediction(tiny_config()).eval()
    randomize_biases(model)
    ids, ts = random_batch()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), HSTUConfig)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    inputs = dict(timestamps=ts, next_timestamps=request_time(ts))
    torch.testing.assert_close(loaded(ids, **inputs).user_embeddings, model(ids, **inputs).user_embeddings, rtol=0, atol=0)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(base, HSTUModel)
    torch.testing.assert_close(base(ids, **inputs).last_hidden_state, model(ids, **inputs).last_hidden_state, rtol=0, atol=0)


def test_trust_remote_code_without_the_package(tmp_path):
    """A checkpoint folder alone loads in a fresh process where modeling_geniusrec cannot be imported."""
    model = HSTUForNextItemPrediction(tiny_config()).eval()
    randomize_biases(model)
    ids, ts = random_batch()
    model.save_pretrained(tmp_path / "ckpt")
    torch.save({"ids": ids, "ts": ts}, tmp_path / "inputs.pt")
    expected = model(ids, timestamps=ts, next_timestamps=request_time(ts)).user_embeddings
    script = textwrap.dedent(f"""
        import sys
        sys.modules["modeling_geniusrec"] = None  # make the package unimportable
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True).eval()
        assert "modeling_geniusrec" not in type(model).__module__, type(model).__module__
        inputs = torch.load({str(tmp_path / 'inputs.pt')!r})
        request = torch.full((inputs["ts"].shape[0],), 2_000_000_000)
        torch.save(model(inputs["ids"], timestamps=inputs["ts"], next_timestamps=request).user_embeddings, {str(tmp_path / 'out.pt')!r})
    """)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=0, atol=0)


@pytest.mark.parametrize("loss_type,sharing", [("sampled_softmax", "position"), ("sampled_softmax", "batch"), ("full_softmax", "position")])
def test_training_lowers_loss_and_changes_weights(loss_type, sharing):
    torch.manual_seed(0)
    model = HSTUForNextItemPrediction(tiny_config(loss_type=loss_type, negatives_sharing=sharing))
    # a learnable task: item i is always followed by item i + 1
    start = torch.randint(4, VOCAB - 10, (16, 1))
    seq = start + torch.arange(10)
    ids, labels, ts = seq[:, :-1], seq[:, 1:], torch.arange(9).repeat(16, 1) * 60
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model(ids, timestamps=ts, next_timestamps=request_time(ts), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "model.layers.0.uvqk.weight" in changed and "model.embeddings.item_embeddings.weight" in changed


def test_gradient_checkpointing_matches_plain_gradients():
    model = HSTUForNextItemPrediction(tiny_config(negatives_sharing="batch"))
    ids, ts = random_batch()
    labels = torch.roll(ids, -1, dims=1)
    torch.manual_seed(3)
    model(ids, timestamps=ts, next_timestamps=request_time(ts), labels=labels).loss.backward()
    plain = model.model.layers[0].uvqk.weight.grad.clone()
    model.zero_grad()
    model.activation_checkpointing_enable()
    model.train()
    torch.manual_seed(3)
    model(ids, timestamps=ts, next_timestamps=request_time(ts), labels=labels).loss.backward()
    torch.testing.assert_close(model.model.layers[0].uvqk.weight.grad, plain)


def test_accidental_hits_are_masked():
    model = HSTUForNextItemPrediction(tiny_config(vocab_size=6, num_negatives=50))  # 2 items: most negatives are hits
    ids = torch.tensor([[4, 5, 4, 5]])
    times = torch.arange(4).view(1, 4)
    loss = model(ids, timestamps=times, next_timestamps=request_time(times), labels=torch.tensor([[5, 4, 5, 4]])).loss
    assert torch.isfinite(loss)


def test_chunked_top_k_equals_full_scoring():
    model = HSTUForNextItemPrediction(tiny_config()).eval()
    ids, ts = random_batch()
    out = model(ids, timestamps=ts, next_timestamps=request_time(ts), return_logits=True)
    full = out.logits[torch.arange(3), -1].clone()
    full[:, :4] = float("-inf")
    full.scatter_(1, ids, float("-inf"))
    expected = full.topk(5).indices
    _, got = model.top_k_items(out.user_embeddings, 5, exclude=ids, chunk_size=7)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "make_inputs,message",
    [
        (lambda: dict(input_ids=torch.tensor([[4, 5, VOCAB + 3]]), timestamps=torch.tensor([[1, 2, 3]])), "outside the item vocabulary"),
        (lambda: dict(input_ids=torch.tensor([[4, 5, 6]]), timestamps=torch.tensor([[1, 2]])), "timestamps has shape"),
        (lambda: dict(input_ids=torch.zeros(2, 0, dtype=torch.long), timestamps=torch.zeros(2, 0, dtype=torch.long)), "empty"),
        (lambda: dict(input_ids=torch.tensor([[4, 5], [0, 0]]), timestamps=torch.tensor([[1, 2], [0, 0]])), "empty history"),
        (lambda: dict(input_ids=torch.tensor([[4, 5]])), "pass `timestamps`"),
        (lambda: dict(input_ids=torch.tensor([[4, 5]]), timestamps=torch.tensor([[1, 2]])), "pass `next_timestamps`"),
        (lambda: dict(input_ids=torch.full((1, MAXLEN + 1), 5), timestamps=torch.zeros(1, MAXLEN + 1, dtype=torch.long)), "max_position_embeddings"),
    ],
)
def test_bad_input_raises_clear_errors(make_inputs, message):
    model = HSTUForNextItemPrediction(tiny_config())
    with pytest.raises(ValueError, match=message):
        model(**make_inputs())


def test_sasrec_causal_padding_and_save_load(tmp_path):
    config = SASRecConfig(vocab_size=VOCAB, hidden_size=16, num_attention_heads=2, max_position_embeddings=MAXLEN, hidden_dropout_prob=0.0)
    model = SASRecForNextItemPrediction(config).eval()
    ids, _ = random_batch()
    base = model(ids).last_hidden_state
    ids2 = ids.clone()
    ids2[:, 5] = 4 if ids[0, 5] != 4 else 5
    torch.testing.assert_close(model(ids2).last_hidden_state[:, :5], base[:, :5])
    padded = torch.cat([torch.zeros(3, 2, dtype=torch.long), ids], dim=1)
    torch.testing.assert_close(model(padded).last_hidden_state[:, 2:], base, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(ids).user_embeddings, model(ids).user_embeddings, rtol=0, atol=0)


def test_a_row_does_not_depend_on_the_other_rows_padding():
    """Positions come from each row's own mask: a holed row gives the same states next to a right- or left-padded row."""
    model = HSTUModel(tiny_config()).eval()
    randomize_biases(model)
    ids, ts = random_batch(batch=2, length=8)
    holed = ids[0].clone()
    holed[3] = 0  # a hole in row 0
    left = torch.cat([torch.zeros(2, dtype=torch.long), ids[1, :6]])  # row 1 left-padded
    right = torch.cat([ids[1, :6], torch.zeros(2, dtype=torch.long)])  # row 1 right-padded
    outs = []
    for other in (left, right):
        batch_ids = torch.stack([holed, other])
        out = model(batch_ids, attention_mask=batch_ids != 0, timestamps=ts, next_timestamps=request_time(ts)).last_hidden_state
        outs.append(out[0])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-6)


def test_evaluation_loss_is_deterministic():
    config = tiny_config(num_negatives=8)
    model = HSTUForNextItemPrediction(config).eval()
    ids, ts = random_batch(batch=2, length=6)
    labels = torch.roll(ids, -1, dims=1)
    inputs = dict(timestamps=ts, next_timestamps=request_time(ts), labels=labels)
    assert model(ids, **inputs).loss == model(ids, **inputs).loss  # eval: the same negatives every time
    model.train()
    assert model(ids, **inputs).loss != model(ids, **inputs).loss  # training: fresh negatives


def test_outputs_follow_the_config_and_return_dict_false():
    model = HSTUForNextItemPrediction(tiny_config(output_hidden_states=True)).eval()
    ids, ts = random_batch(batch=2, length=6)
    inputs = dict(timestamps=ts, next_timestamps=request_time(ts))
    out = model(ids, **inputs)
    assert out.hidden_states is not None and len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert model(ids, **inputs, output_hidden_states=False).hidden_states is None  # the argument wins over the config
    as_tuple = model(ids, **inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.user_embeddings)
    sasrec = SASRecForNextItemPrediction(SASRecConfig(vocab_size=VOCAB, hidden_size=16, max_position_embeddings=MAXLEN)).eval()
    assert isinstance(sasrec(ids, return_dict=False), tuple)


def test_causal_lm_label_convention():
    """`labels=input_ids` trains next-item prediction (shifted inside, the last position unsupervised), as for any
    transformers causal LM; one more column supervises the last position too."""
    import torch.nn.functional as F

    model = HSTUForNextItemPrediction(tiny_config(loss_type="full_softmax")).eval()
    ids, ts = random_batch(batch=2, length=6)
    inputs = dict(timestamps=ts, next_timestamps=request_time(ts))
    out = model(ids, **inputs, labels=ids, return_logits=True)
    logits = out.logits[:, :-1, 4:]  # items only: special tokens are never targets
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), (ids[:, 1:] - 4).reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    following = torch.randint(4, VOCAB, (2, 1))
    longer = model(ids, **inputs, labels=torch.cat([ids, following], dim=1), return_logits=True)
    all_logits = longer.logits[..., 4:]
    targets = torch.cat([ids[:, 1:], following], dim=1) - 4
    torch.testing.assert_close(longer.loss, F.cross_entropy(all_logits.reshape(-1, all_logits.shape[-1]), targets.reshape(-1)))
    with pytest.raises(ValueError, match="causal-LM convention"):
        model(ids, **inputs, labels=ids[:, :3])


def test_compiled_fullgraph_forward_equals_eager():
    """`torch.compile(fullgraph=True)` of the HSTU forward works on CPU (value checks run eagerly, outside the graph)
    and gives the eager outputs, left padding included."""
    model = HSTUModel(tiny_config()).eval()
    randomize_biases(model)
    ids, ts = random_batch(batch=3, length=8)
    ids[1, :3] = 0  # left padding in one row
    inputs = dict(attention_mask=ids != 0, timestamps=ts, next_timestamps=request_time(ts))
    eager = model(ids, **inputs).last_hidden_state
    compiled = torch.compile(model, fullgraph=True)(ids, **inputs).last_hidden_state
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_class", ["hstu", "sasrec"])
def test_stage1_models_generate_sessions(model_class):
    """HSTU and SASRec generate next items autoregressively with the shared ban processor: valid, new, unique items;
    greedy's first item is the model's top-1 next item."""
    if model_class == "hstu":
        model = HSTUForNextItemPrediction(tiny_config()).eval()
    else:
        model = SASRecForNextItemPrediction(SASRecConfig(vocab_size=VOCAB, hidden_size=16, max_position_embeddings=MAXLEN)).eval()
    ids, ts = random_batch(batch=3, length=5)
    ids[2, 3:] = 0  # a shorter, right-padded row
    request = ts[:, -1] + 600
    out = model.generate(input_ids=ids, timestamps=ts, next_timestamps=request, num_beams=4, num_return_sequences=2, max_new_tokens=4)
    sessions = out[:, ids.shape[1]:]
    assert sessions.shape == (6, 4)
    for row, session in enumerate(sessions.tolist()):
        history = set(ids[row // 2].tolist())
        assert all(4 <= item < VOCAB for item in session) and len(set(session)) == 4 and not history & set(session)
    greedy = model.generate(input_ids=ids, timestamps=ts, next_timestamps=request, max_new_tokens=1)[:, -1]
    users = model(ids, timestamps=ts, next_timestamps=request).user_embeddings
    assert torch.equal(greedy, model.top_k_items(users, 1, exclude=ids)[1][:, 0])


def test_output_attentions_are_hstus_pointwise_weights():
    model = HSTUForNextItemPrediction(tiny_config()).eval()
    randomize_biases(model.model)
    ids, ts = random_batch(batch=2, length=6)
    ids[1, 4:] = 0
    inputs = dict(timestamps=ts, next_timestamps=request_time(ts))
    out = model(ids, **inputs, output_attentions=True)
    assert len(out.attentions) == model.config.num_hidden_layers
    weights = out.attentions[0]
    assert weights.shape == (2, model.config.num_attention_heads, 6, 6)
    assert bool((weights.triu(1) == 0).all())  # causal: no weight on later items
    assert bool((weights[1, :, :, 4:] == 0).all())  # padding is never read
    torch.testing.assert_close(model(ids, **inputs).user_embeddings, out.user_embeddings, rtol=0, atol=0)
    assert model(ids, **inputs).attentions is None
