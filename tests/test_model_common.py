"""The common model checks, in transformers' shape: one `ModelTester` per model class builds a tiny config and inputs
(`prepare_config_and_inputs`), and `create_and_check_*` methods run the same checks on every model."""

import pytest
import torch

from modeling_geniusrec import (
    GeniusRecConfig,
    GeniusRecForSessionGeneration,
    HSTUConfig,
    HSTUForNextItemPrediction,
    SASRecConfig,
    SASRecForNextItemPrediction,
)


class ModelTester:
    """Tiny sizes (hidden 16, 2 layers, vocabulary 40) and a batch of three right-padded histories with times."""

    model_class = None
    vocab_size, batch_size, seq_length = 40, 3, 7

    def get_config(self):
        raise NotImplementedError

    def prepare_config_and_inputs(self):
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(4, self.vocab_size, (self.batch_size, self.seq_length), generator=generator)
        input_ids[2, 5:] = 0  # a shorter, right-padded row
        timestamps = (torch.arange(self.seq_length) * 3600 + 10**9).expand(self.batch_size, -1).clone()
        inputs = {"input_ids": input_ids, "attention_mask": input_ids != 0, "timestamps": timestamps,
                  "next_timestamps": timestamps[:, -1] + 600, "labels": self.labels(input_ids, generator)}
        return self.get_config(), inputs

    def labels(self, input_ids, generator):
        labels = torch.randint(4, self.vocab_size, input_ids.shape, generator=generator)
        return labels.masked_fill(input_ids == 0, -100)

    def build(self, config):
        torch.manual_seed(0)
        return self.model_class(config).eval()

    def main_output(self, outputs):
        return outputs.logits if outputs.logits is not None else outputs.user_embeddings

    def forward(self, model, inputs, **extra):
        return model(**inputs, return_logits=True, **extra)

    # -- checks --------------------------------------------------------------------------------------------------
    def create_and_check_save_load(self, tmp_path):
        config, inputs = self.prepare_config_and_inputs()
        model = self.build(config)
        model.save_pretrained(tmp_path)
        reloaded = self.model_class.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(self.main_output(self.forward(reloaded, inputs)), self.main_output(self.forward(model, inputs)),
                                   rtol=0, atol=0)

    def create_and_check_row_alone_equals_batched(self):
        config, inputs = self.prepare_config_and_inputs()
        model = self.build(config)
        batched = self.forward(model, inputs).last_hidden_state
        n = int(inputs["attention_mask"][2].sum())
        alone = {k: (v[2:3, :n] if v.dim() == 2 and k not in ("labels",) else v[2:3]) for k, v in inputs.items()}
        alone["labels"] = inputs["labels"][2:3, : alone["labels"].shape[1] if self.model_class is GeniusRecForSessionGeneration else n]
        single = self.forward(model, alone).last_hidden_state
        rows = slice(None) if self.model_class is GeniusRecForSessionGeneration else slice(0, n)
        torch.testing.assert_close(single[0, rows], batched[2, rows], atol=1e-5, rtol=1e-5)

    def create_and_check_return_dict_false(self):
        """transformers' order in both modes: `out[0]` is the loss, then the logits; the tuple is the dict's fields
        (those not None) in order, value for value."""
        config, inputs = self.prepare_config_and_inputs()
        model = self.build(config)
        as_dict, as_tuple = model(**inputs), model(**inputs, return_dict=False)
        assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], as_dict.loss) and torch.equal(as_dict[0], as_dict.loss)
        assert list(as_dict.keys())[0] == "loss"
        dict_values = as_dict.to_tuple()
        assert len(dict_values) == len(as_tuple)
        for a, b in zip(dict_values, as_tuple):
            if isinstance(a, torch.Tensor):
                assert torch.equal(a, b)

    def create_and_check_generate_outputs(self):
        """generate(..., output_attentions, output_hidden_states, return_dict_in_generate) returns them for every
        step: the flags reach forward."""
        config, inputs = self.prepare_config_and_inputs()
        model = self.build(config)
        inputs.pop("labels")
        out = model.generate(**inputs, max_new_tokens=2, output_attentions=True, output_hidden_states=True, return_dict_in_generate=True)
        attentions = out.decoder_attentions if config.is_encoder_decoder else out.attentions
        hidden = out.decoder_hidden_states if config.is_encoder_decoder else out.hidden_states
        assert len(attentions) == 2 and all(step is not None and step[0] is not None for step in attentions)
        assert len(hidden) == 2 and all(step is not None and step[0] is not None for step in hidden)

    def create_and_check_training_changes_weights(self):
        config, inputs = self.prepare_config_and_inputs()
        model = self.build(config).train()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(5):
            loss = model(**inputs).loss
            losses.append(float(loss))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert losses[-1] < losses[0]
        assert sum(not torch.equal(before[n], p) for n, p in model.named_parameters()) > len(before) // 2

    def create_and_check_add_items(self, tmp_path):
        config, _ = self.prepare_config_and_inputs()
        model = self.build(config)
        table = model.get_input_embeddings().weight.detach().clone()
        model.add_items(2)
        assert model.config.vocab_size == self.vocab_size + 2 and torch.equal(model.get_input_embeddings().weight[: self.vocab_size], table)
        model.save_pretrained(tmp_path)
        assert self.model_class.from_pretrained(tmp_path).config.vocab_size == self.vocab_size + 2

    def create_and_check_output_attentions(self):
        """`output_attentions=True` (argument or config default) returns one map per layer, causal, never reading
        padding, rows summing to 1 where attention is a softmax; the outputs themselves do not change."""
        config, inputs = self.prepare_config_and_inputs()
        model = self.build(config)
        plain = self.forward(model, inputs)
        out = self.forward(model, inputs, output_attentions=True)
        torch.testing.assert_close(self.main_output(out), self.main_output(plain), atol=1e-5, rtol=1e-5)  # eager vs SDPA
        maps = self.attention_maps(out)
        assert plain.get("attentions") is None and plain.get("decoder_attentions") is None
        for name, (weights, causal, padded_keys, softmax) in maps.items():
            assert len(weights) == 2, name
            for w in weights:
                assert w.shape[:2] == (self.batch_size, 2), name
                if causal:
                    assert bool((w.triu(1) == 0).all()), name
                if padded_keys:
                    assert bool((w[2, :, :5 if w.shape[2] == self.seq_length else None, 5:] == 0).all()), name
                if softmax:
                    torch.testing.assert_close(w[:2].sum(-1), torch.ones_like(w[:2].sum(-1)))
        model.config._attn_implementation = "eager"  # transformers allows the config default only with eager attention
        model.config.output_attentions = True
        assert len(self.attention_maps(self.forward(model, inputs))) == len(maps)

    def attention_maps(self, out):
        """name -> (maps, causal?, padding of row 2 at keys 5+ never read?, rows sum to 1?)."""
        softmax = self.model_class is SASRecForNextItemPrediction
        return {"encoder": (out.attentions, True, True, softmax)}


class HSTUModelTester(ModelTester):
    model_class = HSTUForNextItemPrediction

    def get_config(self):
        return HSTUConfig(vocab_size=self.vocab_size, hidden_size=16, qk_head_dim=8, v_head_dim=8, num_attention_heads=2,
                          max_position_embeddings=10, hidden_dropout_prob=0.0, num_negatives=8)


class SASRecModelTester(ModelTester):
    model_class = SASRecForNextItemPrediction

    def get_config(self):
        return SASRecConfig(vocab_size=self.vocab_size, hidden_size=16, num_attention_heads=2, max_position_embeddings=10,
                            hidden_dropout_prob=0.0, intermediate_size=16, num_negatives=8)


class GeniusRecModelTester(ModelTester):
    model_class = GeniusRecForSessionGeneration

    def get_config(self):
        encoder = HSTUConfig(vocab_size=self.vocab_size, hidden_size=16, qk_head_dim=8, v_head_dim=8, num_attention_heads=2,
                             max_position_embeddings=10, hidden_dropout_prob=0.0)
        return GeniusRecConfig(encoder_config=encoder, num_attention_heads=2, intermediate_size=16, max_session_length=4,
                               hidden_dropout_prob=0.0)

    def labels(self, input_ids, generator):
        session = torch.randint(4, self.vocab_size, (input_ids.shape[0], 3), generator=generator)
        return torch.cat([session, torch.full((input_ids.shape[0], 1), 2)], dim=1)  # a session + EOS

    def build(self, config):
        model = super().build(config)
        with torch.no_grad():  # zero-initialised residual branches would hide the decoder
            for module in model.modules():
                if getattr(module, "zero_init", False):
                    module.weight.normal_(0, 0.3)
        return model

    def forward(self, model, inputs, **extra):
        return model(**inputs, **extra)

    def attention_maps(self, out):
        return {"encoder": (out.encoder_attentions, True, True, False), "decoder": (out.decoder_attentions, True, False, True),
                "cross": (out.cross_attentions, False, True, True)}


TESTERS = [HSTUModelTester(), SASRecModelTester(), GeniusRecModelTester()]
IDS = ["hstu", "sasrec", "geniusrec"]


@pytest.mark.parametrize("tester", TESTERS, ids=IDS)
def test_save_load(tester, tmp_path):
    tester.create_and_check_save_load(tmp_path)


@pytest.mark.parametrize("tester", TESTERS, ids=IDS)
def test_row_alone_equals_batched(tester):
    tester.create_and_check_row_alone_equals_batched()


@pytest.mark.parametrize("tester", TESTERS, ids=IDS)
def test_return_dict_false(tester):
    tester.create_and_check_return_dict_false()


@pytest.mark.parametrize("tester", TESTERS, ids=IDS)
def test_generate_outputs(tester):
    tester.create_and_check_generate_outputs()


@pytest.mark.parametrize("tester", TESTERS, ids=IDS)
def test_training_changes_weights(tester):
    tester.create_and_check_training_changes_weights()


@pytest.mark.parametrize("tester", TESTERS, ids=IDS)
def test_add_items(tester, tmp_path):
    tester.create_and_check_add_items(tmp_path)


@pytest.mark.parametrize("tester", TESTERS, ids=IDS)
def test_output_attentions(tester):
    tester.create_and_check_output_attentions()


def test_geniusrec_generate_returns_attention_maps():
    tester = GeniusRecModelTester()
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.build(config)
    inputs.pop("labels")
    out = model.generate(**inputs, max_new_tokens=3, num_beams=2, return_dict_in_generate=True, output_attentions=True)
    assert len(out.decoder_attentions) == 3 and len(out.decoder_attentions[0]) == 2  # steps x layers
    assert out.cross_attentions[0][0].shape[-1] == tester.seq_length and len(out.encoder_attentions) == 2


def test_geniusrec_right_padded_decoder_mask_equals_no_mask():
    """A decoder_attention_mask of ones followed by zeros is accepted and changes nothing (the decoder is causal);
    left padding or holes are refused with the fix."""
    tester = GeniusRecModelTester()
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.build(config)
    labels = inputs["labels"].clone()
    labels[0, 2:] = -100  # a shorter session in row 0
    mask = labels != -100
    plain = model(**{**inputs, "labels": labels})
    masked = model(**{**inputs, "labels": labels}, decoder_attention_mask=mask)
    torch.testing.assert_close(masked.logits[mask], plain.logits[mask], rtol=0, atol=0)
    torch.testing.assert_close(masked.loss, plain.loss, rtol=0, atol=0)
    for bad in (torch.tensor([[0, 1, 1, 1]] * 3), torch.tensor([[1, 0, 1, 1]] * 3)):
        with pytest.raises(ValueError, match="ones followed by zeros"):
            model(**inputs, decoder_attention_mask=bad)
    inputs.pop("labels")
    ones = torch.ones(3, 1, dtype=torch.long)  # generate() extends it by one column per step
    torch.testing.assert_close(model.generate(**inputs, max_new_tokens=3, decoder_attention_mask=ones), model.generate(**inputs, max_new_tokens=3))


def test_geniusrec_generate_from_encoder_outputs_and_assisted_decoding():
    """generate() accepts a precomputed encoding (the bans then come from banned_item_ids); assisted and prompt-lookup
    decoding are refused with the reason."""
    tester = GeniusRecModelTester()
    config, inputs = tester.prepare_config_and_inputs()
    model = tester.build(config)
    inputs.pop("labels")
    encoded = model.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], timestamps=inputs["timestamps"],
                                  next_timestamps=inputs["next_timestamps"])
    expected = model.generate(**inputs, max_new_tokens=3, num_beams=2)
    got = model.generate(encoder_outputs=encoded, attention_mask=inputs["attention_mask"], banned_item_ids=inputs["input_ids"],
                         max_new_tokens=3, num_beams=2)
    assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="pass banned_item_ids"):
        model.generate(encoder_outputs=encoded, max_new_tokens=3)
    for option in (dict(assistant_model=model), dict(prompt_lookup_num_tokens=2)):
        with pytest.raises(ValueError, match="assisted and prompt-lookup decoding are not supported"):
            model.generate(**inputs, max_new_tokens=3, **option)


@pytest.mark.parametrize("tester", TESTERS, ids=IDS)
def test_configs_declare_no_bos_and_say_the_head_is_always_tied(tester):
    config = tester.get_config()
    assert config.bos_token_id is None  # declared, so code that reads it does not raise
    with pytest.warns(UserWarning, match="tie_word_embeddings=False is ignored"):
        assert type(config)(tie_word_embeddings=False).tie_word_embeddings is True  # said, not silent
