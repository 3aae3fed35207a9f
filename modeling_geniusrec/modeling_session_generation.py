"""GeniusRec's generation head: [`GeniusRecForSessionGeneration`], the tied cosine output head over
[`GeniusRecModel`], its losses (next session, set, encoder next item, load balance), `generate()` with item bans and
alternative sessions, and the packed causal view TRL calls."""

import torch
import torch.nn.functional as F
from transformers import GenerationMixin
from transformers.cache_utils import Cache
from transformers.generation import LogitsProcessorList

from .beam_search import candidate_beam_search, exact_length_beam_search, takes_lean_path
from .configuration_geniusrec import GeniusRecConfig
from .generation import BanItemsLogitsProcessor, SharedItemPenaltyLogitsProcessor, check_sessions_fit
from .modeling_geniusrec import (
    GeniusRecEncoderOutput,
    GeniusRecModel,
    GeniusRecOutput,
    GeniusRecPreTrainedModel,
    check_decoder_attention_mask,
    resolve_view,
    shift_right,
)
from .modeling_sequential import check_inputs, last_positions, next_item_loss, resolve_output_flags
from .prefix_sessions import prefix_encoder_outputs
from .scoring import ItemScoringMixin, scale_scores


class GeniusRecForSessionGeneration(ItemScoringMixin, GeniusRecPreTrainedModel, GenerationMixin):
    """GeniusRec with the tied cosine output head, the session loss, `generate()` and the packed causal view."""

    _tied_weights_keys = {}

    def __init__(self, config: GeniusRecConfig):
        super().__init__(config)
        self.model = GeniusRecModel(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        """The output head as transformers and TRL read it: a view module whose `.weight` `(vocab_size, hidden_size)` is
        the current item matrix `normalize(E_id + content projections)`, recomputed on each access (not a parameter:
        it is tied to the item table by construction); logits are `hidden @ weight.T * config.logit_scale`."""
        return self.model.output_embeddings

    def get_encoder(self):
        return self.model.get_encoder()

    @property
    def base_model(self):
        return self.model

    @classmethod
    def from_encoder_pretrained(cls, encoder, **config_kwargs) -> "GeniusRecForSessionGeneration":
        """Builds GeniusRec around a stage-1 HSTU model or checkpoint folder (its config and weights; `config_kwargs`
        set the rest). Anything but an HSTU checkpoint is refused."""
        import json
        import os

        from .modeling_hstu import HSTUForNextItemPrediction

        if isinstance(encoder, (str, os.PathLike)):
            config_file = os.path.join(encoder, "config.json")
            model_type = json.load(open(config_file)).get("model_type") if os.path.isfile(config_file) else None
            if model_type != "hstu":
                raise ValueError(f"{encoder!r} is not an HSTU checkpoint (model_type {model_type!r}): the encoder must be a stage-1 "
                                 "HSTU model (train.pretrain --model_type hstu)")
            encoder = HSTUForNextItemPrediction.from_pretrained(encoder)
        if not isinstance(encoder, HSTUForNextItemPrediction):
            raise ValueError(f"the encoder must be an HSTUForNextItemPrediction, got {type(encoder).__name__}")
        stage1 = encoder
        model = cls(GeniusRecConfig(encoder_config=stage1.config, **config_kwargs))
        model.model.encoder.load_state_dict(stage1.model.state_dict())
        return model

    def item_vectors(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """The output item vectors of token ids `[start, end)` (content-aware where configured): `(end - start, D)`."""
        return self.model.item_output_matrix(start, end)

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None, **model_kwargs):
        """As transformers', but the encoding stays one row per user: the decoder groups each user's `expand_size`
        consecutive beams (or returned sequences) over it, instead of attending over `expand_size` copies of the
        history's keys, which beam search would also reorder at every step."""
        encoder_outputs = model_kwargs.pop("encoder_outputs", None)
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, False, input_ids, **model_kwargs)
        if encoder_outputs is not None:
            model_kwargs["encoder_outputs"] = encoder_outputs
        return input_ids, model_kwargs

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        inputs["session_ids"] = input_ids  # the experts read every session item so far, the cache holds only attention
        return inputs

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        timestamps: torch.LongTensor | None = None,
        next_timestamps: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        encoder_outputs: GeniusRecEncoderOutput | None = None,
        session_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        encoder_query_weight: float = 0.0,
        decoder_attention_mask: torch.Tensor | None = None,
        view: str = "auto",
        split_positions: torch.LongTensor | None = None,
        encoder_targets: torch.LongTensor | None = None,
        **kwargs,
    ) -> GeniusRecOutput:
        r"""
        Args:
            input_ids (`(batch_size, history_length)`): the history; or, with no `decoder_input_ids`/`labels`/
                `encoder_outputs`, the packed row `[history..., SEP, session..., EOS]` (see [`packed_forward`]).
            labels (`(batch_size, target_length)`): `[s_1, ..., s_T, EOS]`, -100 at padding; `decoder_input_ids`
                default to labels shifted right behind `[SEP]`.
            encoder_query_weight (`float`, *optional*, defaults to 0): with `encoder_outputs`, score `state + w * u` (`u`
                the encoder's next-item query); `generate(encoder_query_weight=...)` passes it to every step.
            decoder_attention_mask (`(batch_size, target_length)`, *optional*): accepted when each row is ones followed by
                zeros (right padding), which is what the model computes anyway: the decoder is causal, so padding after
                a row's last item changes none of its real positions. Left padding or holes are refused (sessions start
                at `[SEP]` in column 0); mark padded labels with -100.
            view (`str`, *optional*, defaults to `"auto"`): `"seq2seq"`, `"packed"` or `"auto"` (packed when only
                `input_ids` are given): see [`GeniusRecModel.forward`].
            split_positions (`(batch_size, P)`, *optional*): training at P split points per window from one encoder pass
                (-1 pads): `labels` are then `(batch_size, P, target_length)`, see [`prefix_forward`].
            encoder_targets (`(batch_size, history_length)`, *optional*): with `split_positions`, the next item after
                each window position (-100 at padding), the targets of the encoder's own loss (`encoder_loss_weight`); not
                named `*labels*`, so that `Trainer` still finds the evaluation's labels when a batch has none of these.
        Returns:
            [`GeniusRecOutput`] with `logits` `(batch_size, target_length, vocab_size)`.
        """
        if cache is None and kwargs.get("past_key_values") is not None:
            cache = kwargs.pop("past_key_values")  # the older name transformers still accepts
        check_decoder_attention_mask(decoder_attention_mask)
        if split_positions is not None:
            return self.prefix_forward(input_ids, attention_mask, timestamps, next_timestamps, split_positions, labels, encoder_targets)
        if resolve_view(view, decoder_input_ids is None and labels is None and encoder_outputs is None) == "packed":
            return self.packed_forward(input_ids, attention_mask, timestamps, next_timestamps)
        if labels is not None:  # checked before they become decoder inputs, so that a bad label is named as one
            check_session_labels(labels, self.config)
        if decoder_input_ids is None:
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)
        encoder_loss_weight = getattr(self.config, "encoder_loss_weight", 0.0)
        encoder_loss = labels is not None and encoder_loss_weight > 0 and encoder_outputs is None and self.training
        if encoder_loss:  # the encoder's own next-item loss needs its states at every history position
            encoder_outputs = self.model.encode(input_ids, attention_mask, timestamps, next_timestamps, return_history_states=True)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, timestamps=timestamps, next_timestamps=next_timestamps,
                         decoder_input_ids=decoder_input_ids, encoder_outputs=encoder_outputs, session_ids=session_ids,
                         cache=cache, use_cache=use_cache, output_hidden_states=kwargs.get("output_hidden_states"),
                         output_attentions=kwargs.get("output_attentions"), return_dict=True)
        # the output item vectors: computed once per generate() call and kept on that call's cache (per-call state
        # travels with the call, never as an attribute of the model: two threads sharing a model stay independent)
        matrix = getattr(out.cache, "geniusrec_item_matrix", None) if out.cache is not None else None
        if matrix is None:
            matrix = self.model.item_output_matrix()
            if out.cache is not None and not torch.is_grad_enabled():
                out.cache.geniusrec_item_matrix = matrix
        state = self._query_states(out.last_hidden_state, encoder_outputs, encoder_query_weight)
        out.logits = scale_scores(state @ matrix.T, self.config, inplace=True)  # in place: one pass less over (B, T, V)
        if labels is not None:
            out.loss = self.session_loss(out.logits, labels, out.aux_loss)
            if encoder_loss:
                out.loss = out.loss + encoder_loss_weight * self.encoder_next_item_loss(input_ids, attention_mask, labels, encoder_outputs)
        # transformers' field order in both modes: (loss,) logits, last_hidden_state, ... (fields set after
        # construction would come last in the dict, and `out[0]` would not be the loss)
        ordered = GeniusRecOutput(loss=out.loss, logits=out.logits, **{k: v for k, v in out.items() if k not in ("loss", "logits")})
        if not resolve_output_flags(self.config, False, kwargs.get("return_dict"))[1]:
            return ordered.to_tuple()
        return ordered

    @staticmethod
    def _query_states(state: torch.Tensor, encoder_outputs, encoder_query_weight: float) -> torch.Tensor:
        """The states the head scores: decoder states `(B, t, D)`, plus `encoder_query_weight` times the encoder's
        next-item query of each row's history (`generate(encoder_query_weight=...)`)."""
        if encoder_query_weight and encoder_outputs is not None:
            user = encoder_outputs.user_embedding
            state = state + encoder_query_weight * user.repeat_interleave(state.shape[0] // user.shape[0], dim=0).unsqueeze(1)
        return state

    def session_states(self, decoder_input_ids: torch.LongTensor, encoder_outputs: GeniusRecEncoderOutput, session_ids=None, cache=None,
                       encoder_query_weight: float = 0.0) -> torch.Tensor:
        """What the head would score, without scoring the catalog: `(B, t, D)` states for decoder inputs `(B, t)` over an
        encoding (one row per history; a history's rows consecutive), `state + encoder_query_weight * u`. The candidate
        decode ([`candidate_beam_search`]) scores only each user's candidates with them."""
        out = self.model(decoder_input_ids=decoder_input_ids, encoder_outputs=encoder_outputs, session_ids=session_ids, cache=cache,
                         use_cache=cache is not None, return_dict=True)
        return self._query_states(out.last_hidden_state, encoder_outputs, encoder_query_weight)

    def session_loss(self, logits: torch.Tensor, labels: torch.LongTensor, aux_loss: torch.Tensor) -> torch.Tensor:
        """The decoder's loss: logits `(B, T, V)`, labels `(B, T)` (-100 at padding), the gates' balance loss `()` ->
        `()`. Token cross-entropy with the first position weighted `next_item_loss_weight`, plus
        `router_aux_loss_coef * aux_loss`, plus `session_set_loss_weight * session_set_loss` where set."""
        excluded = self.training_excluded_items(logits.device)  # not in the training catalog (cold-items protocol)
        scores = logits if excluded is None else logits.masked_fill(excluded, float("-inf"))
        log_probs = F.log_softmax(scores, dim=-1)  # once: the token loss and the set loss read it (cross_entropy's own two steps)
        token_ce = F.nll_loss(log_probs.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="none").view(labels.shape)
        weights = (labels != -100).float()
        weights[:, 0] *= self.config.next_item_loss_weight
        loss = (token_ce * weights).sum() / weights.sum().clamp(min=1e-9) + self.config.router_aux_loss_coef * aux_loss
        if getattr(self.config, "session_set_loss_weight", 0.0):
            loss = loss + self.config.session_set_loss_weight * session_set_loss(log_probs, labels, self.config.eos_token_id)
        return loss

    def encoder_next_item_loss(self, input_ids, attention_mask, labels, encoder_outputs) -> torch.Tensor:
        """Stage 1's loss on the encoder inside GeniusRec: history `(B, N)` (right-padded), session `labels` `(B, T)`,
        and `encoder_outputs` with `history_states` -> `()`. Position t predicts history item t + 1, the last history
        position the session's first item (`labels[:, 0]`), with the encoder config's loss (sampled or full softmax)."""
        mask = (input_ids != self.config.pad_token_id) if attention_mask is None else attention_mask.bool()
        targets = torch.full_like(input_ids, -100)
        targets[:, :-1] = input_ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        first = labels[:, 0]
        targets[rows, last_positions(mask)] = torch.where((first >= self.config.num_special_tokens), first, torch.full_like(first, -100))
        return self.encoder_loss_at_positions(encoder_outputs.history_states, targets)

    def encoder_loss_at_positions(self, history_states: torch.Tensor, targets: torch.LongTensor) -> torch.Tensor:
        """The encoder config's next-item loss (sampled or full softmax) of states `(B, N, D)` against `targets` `(B, N)`
        (-100: no target), over the encoder's own normalised item vectors -> `()`."""
        encoder = self.model.encoder
        items = lambda start=0, end=None: F.normalize(encoder.embeddings.item_matrix(start, end), dim=-1)  # noqa: E731
        return next_item_loss(self.config.encoder_config, history_states, targets, items,
                              self.training_excluded_items(targets.device), self.training)

    def prefix_forward(self, input_ids, attention_mask, timestamps, next_timestamps, split_positions, labels,
                       encoder_targets=None) -> GeniusRecOutput:
        """The session loss at every given split of each window from one encoder pass (see `prefix_sessions`), plus
        `encoder_loss_weight` x stage 1's next-item loss at every window position (training only, from `encoder_targets`).

        Windows `(B, N)` right-padded with their times and request time; `split_positions` `(B, P)`; `labels`
        `(B, P, T)` (`[s_1, .., s_T, EOS]` after each split, -100 at padding). Returns [`GeniusRecOutput`] with the
        loss and `logits` `(R, T, vocab_size)` for the R valid splits, user by user."""
        if labels is None or labels.dim() != 3 or labels.shape[:2] != split_positions.shape:
            raise ValueError(f"split_positions {tuple(split_positions.shape)} need labels (batch_size, P, target_length) with the same "
                             f"first two sizes, got {None if labels is None else tuple(labels.shape)}")
        if attention_mask is None:
            attention_mask = input_ids != self.config.pad_token_id
        encoded = self.model.encode(input_ids, attention_mask, timestamps, next_timestamps, return_history_states=True)
        prefixed, rows, slots = prefix_encoder_outputs(self.model, encoded, input_ids, split_positions)
        session_labels = labels[rows, slots]
        check_session_labels(session_labels, self.config)
        decoder_input_ids = shift_right(session_labels, self.config.decoder_start_token_id, self.config.pad_token_id)
        out = self.model(decoder_input_ids=decoder_input_ids, encoder_outputs=prefixed, return_dict=True)
        logits = scale_scores(out.last_hidden_state @ self.model.item_output_matrix().T, self.config, inplace=True)
        loss = self.session_loss(logits, session_labels, out.aux_loss)
        weight = getattr(self.config, "encoder_loss_weight", 0.0)
        if weight > 0 and self.training:
            if encoder_targets is None or encoder_targets.shape != input_ids.shape:
                raise ValueError("encoder_loss_weight > 0 with split_positions needs encoder_targets shaped like input_ids")
            loss = loss + weight * self.encoder_loss_at_positions(encoded.history_states, encoder_targets)
        return GeniusRecOutput(loss=loss, logits=logits, last_hidden_state=out.last_hidden_state, gate_weights=out.gate_weights,
                               aux_loss=out.aux_loss, encoder_last_hidden_state=encoded.last_hidden_state)

    def packed_forward(self, input_ids, attention_mask=None, timestamps=None, next_timestamps=None) -> GeniusRecOutput:
        """Causal-LM view (see [`GeniusRecModel.packed_forward`]) with `logits` aligned to the packed row."""
        out = self.model.packed_forward(input_ids, attention_mask, timestamps, next_timestamps)
        out.logits = scale_scores(out.last_hidden_state @ self.model.item_output_matrix().T, self.config)
        return out

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, logits_processor=None, ban_history: bool = True, ban_repeats: bool = True,
                 banned_item_ids: torch.LongTensor | None = None, encoder_query_weight: float = 0.0, shared_item_penalty: float | None = None,
                 candidate_count: int | None = None, **kwargs):
        """`generate()` with GeniusRec's bans added: special tokens (but EOS), the row's history (`ban_history`), items
        already in the session (`ban_repeats`).

        Args:
            input_ids, attention_mask (`(batch_size, history_length)`): the history fed to the encoder.
            timestamps (`(batch_size, history_length)`), next_timestamps (`(batch_size,)`): event times and the request
                time (seconds); required when the encoder uses time (`encoder_config.use_time_bias`).
            banned_item_ids (`(batch_size, S)`, *optional*): the items each row must never get, e.g. the user's whole
                history when `input_ids` is only its most recent window (pad ids are ignored); defaults to `input_ids`.
            encoder_query_weight (`float`, *optional*, defaults to 0): every step scores items with
                `logit_scale * (state_t + w * u) . item` instead of `state_t . item`, with `u` the encoder's next-item
                query (stage 1's user state): it leans each step toward the encoder's own ranking (on ML-1M it
                recommends more of the catalog at little cost in accuracy; chosen on validation).
            shared_item_penalty (`float`, *optional*): alternative sessions. With `num_return_sequences=k > 1`, the k
                sessions of a user are decoded one after another (each a full search of its own: `num_beams` beams,
                or sampling), and while decoding session j every item of that user's sessions 1..j-1 has its logit
                lowered by this amount ([`SharedItemPenaltyLogitsProcessor`]); `float("inf")` bans them, so the k
                sessions share no item. Without it, the k sessions are the search's k best sequences, which on
                ML-1M share most of their items (often the same set reordered). Session 1 is what
                `num_return_sequences=1` returns. Costs k searches; returns token ids only (no
                `return_dict_in_generate`).
            candidate_count (`int`, *optional*): the two-stage decode for large catalogs. The first step's state of
                each user retrieves that user's `candidate_count` best items by dot product (the catalog scored in
                chunks, the user's banned items left out), and every step scores only those candidates: no
                `(beams, catalog)` tensor per step, a step's cost independent of the catalog's size. Log-probabilities
                are normalised over the candidates, the special tokens and the banned history (what the full decode's
                softmax counts besides the items it can pick), so with every eligible item retrieved the sessions are
                the full decode's, and with fewer only the mass of the items not retrieved is missing (measured on
                ML-1M in BENCHMARKS.md, "Two-stage decode"). Beam
                search of fixed-length sessions only (`min_new_tokens == max_new_tokens`, no per-step outputs); needs
                `candidate_count >= max_new_tokens + num_beams`. None (default): every step scores the whole catalog.
        Returns:
            `(batch_size * num_return_sequences, 1 + length)` token ids starting with `[SEP]`.
        """
        if kwargs.get("assistant_model") is not None or kwargs.get("prompt_lookup_num_tokens") or kwargs.get("assistant_early_exit"):
            raise ValueError("assisted and prompt-lookup decoding are not supported by GeniusRec: transformers runs the candidate model "
                             "without the history, so the per-user bans (history, repeats) and the time policy cannot shape its "
                             "candidates; use num_beams or do_sample")
        if input_ids is None and kwargs.get("encoder_outputs") is not None:
            if ban_history and banned_item_ids is None:
                raise ValueError("generate(encoder_outputs=...) without input_ids: pass banned_item_ids (the items to ban, e.g. the user's "
                                 "history) or ban_history=False")
        elif input_ids is None:
            raise ValueError("generate() needs the history: input_ids (batch_size, history_length) with timestamps and next_timestamps, "
                             "or a precomputed encoder_outputs (model.get_encoder()(...))")
        if shared_item_penalty is not None and (kwargs.get("num_return_sequences") or 1) > 1:
            return self._generate_alternatives(input_ids, attention_mask, logits_processor, ban_history, ban_repeats, banned_item_ids,
                                               encoder_query_weight, float(shared_item_penalty), candidate_count=candidate_count, **kwargs)
        check_decoder_attention_mask(kwargs.get("decoder_attention_mask"))
        if input_ids is not None:  # before beams expand the rows: errors name the caller's rows
            check_inputs(self.config.encoder_config, input_ids, attention_mask, kwargs.get("timestamps"))
        processors = LogitsProcessorList(logits_processor or [])
        wanted = kwargs.get("min_new_tokens") or 0
        if wanted > self.config.vocab_size - self.config.num_special_tokens:
            raise ValueError(f"min_new_tokens={wanted} asks for more distinct items than the catalog holds "
                             f"({self.config.vocab_size - self.config.num_special_tokens}); ask for fewer")
        if banned_item_ids is not None and input_ids is not None and banned_item_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(f"banned_item_ids has {banned_item_ids.shape[0]} rows but input_ids has {input_ids.shape[0]}")
        banned = input_ids if banned_item_ids is None else banned_item_ids
        kwargs.setdefault("max_new_tokens", self.config.max_session_length)
        if ban_history:
            check_sessions_fit(self.config, banned, wanted)
        # a session of exactly max_new_tokens items: EOS is banned by our processor rather than by transformers'
        # min-length processors (the same sessions; those copy the whole score matrix twice per step)
        exact = wanted >= kwargs["max_new_tokens"]
        if exact:
            kwargs.pop("min_new_tokens")
        processors.append(BanItemsLogitsProcessor(self.config, banned, ban_history, ban_repeats, ban_eos=exact))
        # per-call options travel with the call (model kwargs reach every step's forward), never as attributes on the
        # model: two threads generating with one model do not see each other's options
        if encoder_query_weight:
            kwargs["encoder_query_weight"] = float(encoder_query_weight)
        if candidate_count is not None:
            check_candidate_count(candidate_count, exact, kwargs, self.config, self.generation_config)
            kwargs["candidate_count"] = int(candidate_count)
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, logits_processor=processors, **kwargs)

    def _validate_model_kwargs(self, model_kwargs: dict):
        """transformers' check of the model kwargs (given a copy), less `candidate_count`: a decoding option read by
        [`_beam_search`], never a model input."""
        model_kwargs.pop("candidate_count", None)
        super()._validate_model_kwargs(model_kwargs)

    def _beam_search(self, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False, **model_kwargs):
        """transformers' beam search, or, for sessions of a fixed length (EOS banned), [`exact_length_beam_search`]:
        the same sequences with less bookkeeping (see `beam_search.py`)."""
        lean = takes_lean_path(generation_config, logits_processor, stopping_criteria, synced_gpus, model_kwargs)
        if model_kwargs.get("candidate_count"):
            if not lean:
                raise ValueError("candidate_count decodes fixed-length sessions by beam search only: drop output_scores / "
                                 "return_dict_in_generate / custom stopping criteria, or candidate_count")
            return candidate_beam_search(self, input_ids, logits_processor, generation_config, **model_kwargs)
        if lean:
            return exact_length_beam_search(self, input_ids, logits_processor, generation_config, **model_kwargs)
        return super()._beam_search(input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus, **model_kwargs)

    def _generate_alternatives(self, input_ids, attention_mask, logits_processor, ban_history, ban_repeats, banned_item_ids,
                               encoder_query_weight, penalty, **kwargs):
        """`generate(num_return_sequences=k, shared_item_penalty=p)`: k searches per user, search j penalising the items
        of searches < j; `(batch_size * k, 1 + length)` with a user's k sessions in consecutive rows (transformers'
        order), shorter sessions padded with `pad_token_id`."""
        if kwargs.get("return_dict_in_generate"):
            raise ValueError("shared_item_penalty returns token ids only: drop return_dict_in_generate (or shared_item_penalty)")
        count = kwargs.pop("num_return_sequences")
        if ban_history and penalty == float("inf"):  # k sessions that share no item need k times the items
            check_sessions_fit(self.config, input_ids if banned_item_ids is None else banned_item_ids, kwargs.get("min_new_tokens") or 0, count)
        sessions, earlier = [], None
        for _ in range(count):
            processors = list(logits_processor or [])
            if earlier is not None:
                processors.append(SharedItemPenaltyLogitsProcessor(earlier, penalty, self.config.num_special_tokens))
            out = self.generate(input_ids=input_ids, attention_mask=attention_mask, logits_processor=processors, ban_history=ban_history,
                                ban_repeats=ban_repeats, banned_item_ids=banned_item_ids, encoder_query_weight=encoder_query_weight,
                                num_return_sequences=1, **kwargs)
            sessions.append(out)
            earlier = out[:, 1:] if earlier is None else torch.cat([earlier, out[:, 1:]], dim=1)
        width = max(s.shape[1] for s in sessions)
        padded = [F.pad(s, (0, width - s.shape[1]), value=self.config.pad_token_id) for s in sessions]
        return torch.stack(padded, dim=1).flatten(0, 1)  # (B, k, L) -> (B * k, L): a user's sessions consecutive


def check_candidate_count(candidate_count, exact: bool, kwargs: dict, config, generation_config) -> None:
    """`generate(candidate_count=C)` is valid: an int, beam search over fixed-length sessions, and at least
    `max_new_tokens + num_beams` candidates (no more than the catalog's items); else one line naming the fix."""
    num_items = config.vocab_size - config.num_special_tokens
    beams = kwargs.get("num_beams") or generation_config.num_beams or 1
    length = kwargs["max_new_tokens"]
    if isinstance(candidate_count, bool) or not isinstance(candidate_count, int):
        raise ValueError(f"candidate_count must be an int (items retrieved per user), got {candidate_count!r}")
    if beams < 2 or kwargs.get("do_sample"):
        raise ValueError("candidate_count is a beam-search decode: pass num_beams >= 2 (and no do_sample), or drop candidate_count")
    if not exact:
        raise ValueError("candidate_count decodes sessions of a fixed length: pass min_new_tokens equal to max_new_tokens")
    if not length + beams <= candidate_count <= num_items:
        raise ValueError(f"candidate_count must be in [max_new_tokens + num_beams, catalog items] = [{length + beams}, {num_items}], "
                         f"got {candidate_count}")


def check_session_labels(labels: torch.LongTensor, config: GeniusRecConfig) -> None:
    """Session labels `(B, T)` are item ids or EOS in `[1, vocab_size)`, never `[PAD]`, or -100; else a clear error."""
    bad = (labels != -100) & ((labels < 0) | (labels >= config.vocab_size) | (labels == config.pad_token_id))
    if bool(bad.any()):
        raise ValueError(f"labels must be item token ids or EOS in [1, {config.vocab_size}) (never [PAD]), or -100 where "
                         f"nothing is supervised; got {sorted(set(labels[bad].tolist()))[:5]}")


def session_set_loss(log_probs: torch.Tensor, labels: torch.LongTensor, eos_token_id: int) -> torch.Tensor:
    """Multi-label loss over the rest of the session: log-probabilities `(B, T, V)` (`log_softmax` of the logits),
    labels `(B, T)` (`[s_1, .., s_T, EOS]`, -100 at padding) -> `()`: at each position t with an item label, the mean
    of `-log_probs[:, t, s_j]` over the items `s_j` with j >= t (the targets still to come, in any order), averaged
    over those positions."""
    items = (labels != -100) & (labels != eos_token_id)  # (B, T)
    index = labels.clamp(min=0).unsqueeze(1).expand(-1, labels.shape[1], -1)  # (B, T, T): [b, t, j] = s_j
    picked = log_probs.gather(-1, index)  # (B, T, T): log p_t(s_j)
    positions = torch.arange(labels.shape[1], device=labels.device)
    later = (positions.view(1, -1) >= positions.view(-1, 1)).unsqueeze(0) & items.unsqueeze(1)  # j >= t, s_j an item
    later = later & items.unsqueeze(2)  # only positions that predict an item
    per_position = -torch.where(later, picked, 0.0).sum(-1) / later.sum(-1).clamp(min=1)  # (B, T)
    return (per_position * items).sum() / items.sum().clamp(min=1)


GeniusRecForSessionGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

__all__ = ["GeniusRecForSessionGeneration", "session_set_loss"]
