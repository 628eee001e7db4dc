"""A causal generator run a few STFT frames at a time, its state held in tensors.

:class:`StreamingCore` splits a causal :class:`~hifi_tse.models.generator.Generator`
(``model.causal: true``) into what an enrollment fixes and what each new frame needs:

- :meth:`~StreamingCore.enroll`: ``ref_spec (1, F, S, 2)`` (and the GE2E mels) -> the
  *cues*: the keys and values of every cross-attention to the enrollment (USEF and each
  re-injection) and the FiLM parameters, computed once per enrollment;
- :meth:`~StreamingCore.step`: new frames ``spec (1, F, Tn, 2)``, their position in the
  stream, the cues and the *state* -> the complex mask of the new frames and the next state.
  The state is, per GridNet stage, the forward time LSTM's ``(h, c)`` and the keys and values
  of the self-attention's past frames (the last ``model.attention_window_seconds`` of them;
  all past frames when the window is 0).

Everything frame-wise (band-split encoder, USEF, FiLM, the across-band LSTM, the mask
decoder) sees only the new frames, so the masks of consecutive steps are the offline causal
model's masks. The same module runs eagerly in :class:`hifi_tse.infer.streaming.
StreamingExtractor` and is exported to ONNX (``hifi-tse export --streaming``), so there is one
definition of the streaming computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hifi_tse.errors import UserError
from hifi_tse.infer.export import decode_real
from hifi_tse.models.attention import _merge_heads
from hifi_tse.models.conditioning import FiLM


class StreamingCore(nn.Module):
    """See the module docstring. Batch 1, eval mode."""

    def __init__(self, generator: nn.Module, for_export: bool = False) -> None:
        super().__init__()
        stages = generator.backbone.stages
        if not stages[0].block.attn.causal:
            raise UserError("streaming needs a causal model (train it with model.causal: true)")
        self.g = generator
        # The decoder's overlap-add of shared bins as a one-hot matmul exports correctly;
        # eagerly, the generator's own index_add is cheaper.
        self.for_export = for_export
        self.window = int(stages[0].block.attn.window)  # frames; 0 = all past frames
        bands = generator.decoder.bands
        merge = F.one_hot(bands.scatter_idx, bands.num_bins + 1).float()
        self.register_buffer("merge", merge, persistent=False)  # (K*Wmax, F+1)

    # ------------------------------------------------------------------ enrollment
    def enroll(
        self, ref_spec: torch.Tensor, ref_mels: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """``ref_spec (1, F, S, 2)`` (+ GE2E mels ``(1, T_mel, 40)``) -> the cues, in the
        order :meth:`step` takes them (see :meth:`cue_names`)."""
        g = self.g
        ref = g.encoder.forward_real(ref_spec, whole_clip=True)  # (K, 1, S, D)
        cues: list[torch.Tensor] = []
        if g.usef is not None:
            cues += [t.contiguous() for t in g.usef.context(ref)]
        if g.film is not None:
            cues.append(g.film.params(ref))
        if g.speaker_embedding is not None:
            cues.append(g.speaker_embedding.params(ref_mels))
        for stage in g.backbone.stages:
            if stage.reinject is not None:
                cues += [t.contiguous() for t in stage.reinject.context(ref)]
        return cues

    def cue_names(self) -> list[str]:
        """Names of :meth:`enroll`'s outputs (the ONNX graphs' tensor names)."""
        g = self.g
        names = ["usef_keys", "usef_values"] if g.usef is not None else []
        names += ["film"] if g.film is not None else []
        names += ["ge2e_film"] if g.speaker_embedding is not None else []
        for i, stage in enumerate(g.backbone.stages):
            if stage.reinject is not None:
                names += [f"reinject{i}_keys", f"reinject{i}_values"]
        return names

    # ------------------------------------------------------------------ state
    def initial_state(self) -> list[torch.Tensor]:
        """Per stage: LSTM ``h, c (1, K, H)``, attention ``keys, values (K, heads, W, d)``
        (W = the window, zero-filled and masked until the stream fills it; 0 without a
        window, growing)."""
        bands = len(self.g.layout)
        device = self.merge.device
        state = []
        for stage in self.g.backbone.stages:
            lstm, attn = stage.block.inter.lstm, stage.block.attn
            dim = attn.qkv.in_features
            h = torch.zeros(1, bands, lstm.hidden_size, device=device)
            kv = torch.zeros(bands, attn.heads, self.window, dim // attn.heads, device=device)
            state += [h, h.clone(), kv, kv.clone()]
        return state

    def state_names(self) -> list[str]:
        names = []
        for i in range(len(self.g.backbone.stages)):
            names += [f"lstm{i}_h", f"lstm{i}_c", f"attn{i}_keys", f"attn{i}_values"]
        return names

    # ------------------------------------------------------------------ one step
    def step(
        self, spec: torch.Tensor, position: torch.Tensor, *cues_and_state: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """``spec (1, F, Tn, 2)`` of the frames ``position, ..., position + Tn - 1`` (int64
        0-dim), then the cues and the state -> ``(mask (1, F, Tn, 2), *next_state)``."""
        g = self.g
        cues = list(cues_and_state[: len(self.cue_names())])
        state = list(cues_and_state[len(cues) :])
        x = g.encoder.forward_real(spec)  # (K, 1, Tn, D)
        if g.usef is not None:
            x = g.usef.attend(x, (cues.pop(0), cues.pop(0)))
        if g.film is not None:
            x = FiLM.modulate(x, cues.pop(0))
        if g.speaker_embedding is not None:
            x = FiLM.modulate(x, cues.pop(0))
        next_state: list[torch.Tensor] = []
        for i, stage in enumerate(g.backbone.stages):
            if stage.reinject is not None:
                x = stage.reinject.attend(x, (cues.pop(0), cues.pop(0)))
            k, b, t, d = x.shape
            x = stage.block.intra(x.view(k, b * t, d))  # across bands: frame-wise
            h, c, keys, values = state[4 * i : 4 * i + 4]
            x, new = self._time_step(stage.block, x.view(k * b, t, d), position, h, c, keys, values)
            next_state += new
            x = x.view(k, b, t, d)
        if self.for_export:
            mask = decode_real(g.decoder, x, self.merge)
        else:
            mask = torch.view_as_real(g.decoder(x).to(torch.complex64))
        return (mask, *next_state)

    def _time_step(
        self,
        block: nn.Module,
        x: torch.Tensor,
        position: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The time LSTM and causal self-attention of one block on ``x (K, Tn, D)``."""
        inter = block.inter
        out, (h, c) = inter.lstm(inter.norm(x), (h, c))
        x = x + inter.proj(out)
        attn = block.attn
        n, t, d = x.shape
        qkv = attn.qkv(block.attn_norm(x)).view(n, t, 3, attn.heads, d // attn.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        k = torch.cat([keys, k], dim=2)
        v = torch.cat([values, v], dim=2)
        # Query j sits at `position + j`; cached key i at `position - cached + i`. A key is
        # seen when it is not later than the query, within the window, and was ever filled.
        cached = keys.shape[2]
        q_pos = position + torch.arange(t, device=x.device)
        k_pos = position - cached + torch.arange(k.shape[2], device=x.device)
        lag = q_pos[:, None] - k_pos[None, :]
        mask = (lag >= 0) & (k_pos >= 0)[None, :]
        if self.window > 0:
            mask = mask & (lag <= self.window)
            keys, values = k[:, :, -self.window :], v[:, :, -self.window :]
        else:
            keys, values = k, v
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return x + attn.out(_merge_heads(y)), [h, c, keys, values]
