"""ELMo's two-direction, multi-layer LSTM with projection and clipping, as bilm-tf computes it.

Each layer holds both directions' weights in torch.nn.LSTM's layout (gates i, f, g, o; `weight_ih`, `weight_hh`,
`weight_hr`) stacked on a leading direction axis [forward, backward], with one bias per direction (TF's `B` with
its forget-gate +1 folded in). The backward LSTM reads each sentence reversed within its own length; it stays
in that reversed frame through every layer (the directions never mix) and is turned back only for the output.

Two ways to run a layer, with the same weights:
- "exact": steps the recurrence in Python with cell clipping and projection clipping, both directions at once
  (batched matmuls); x·W_ih for all time steps is one matmul before the loop.
- "fused": torch's fused LSTM (no clipping), then a check that no clip would have bound along the trajectory
  it produced (if none binds, the clipped and the unclipped recurrences are the same computation); where one
  would have, the layer is recomputed with "exact". Without clipping it is used as is.
"auto" picks "exact" on CPU and "fused" elsewhere (cuDNN has a fused kernel with projections). On CPU torch has
no oneDNN kernel for LSTMs with projections and its fallback is no faster than our loop, which is FLOP-bound:
small preset, 32 x 22 tokens, one thread, a layer took 162 ms exact and 155 ms fused, and the check after the
fused run costs more than the difference. A call with an explicit `lstm_state` always runs "exact" (each row's
own final state is needed). `HfcmElmoBiLstm.last_implementation` records what the last call ran.
"""
import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

# A clip bound checked on recomputed cell values must hold with this relative margin, so that rounding
# differences between torch's fused kernel and the recomputation cannot hide a clip that binds.
CLIP_CHECK_MARGIN = 1e-4


class HfcmElmoLstmLayer(nn.Module):
    """One biLSTM layer: both directions' LSTMs with projection (stacked parameters, direction first)."""

    def __init__(self, input_size, cell_size, projection_size):
        super().__init__()
        self.cell_size = cell_size
        self.weight_ih = nn.Parameter(torch.empty(2, 4 * cell_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(2, 4 * cell_size, projection_size))
        self.bias = nn.Parameter(torch.empty(2, 4 * cell_size))
        self.weight_hr = nn.Parameter(torch.empty(2, projection_size, cell_size))

    def run_exact(self, inputs, state, step_mask, cell_clip, proj_clip, directions=slice(None)):
        """`inputs` [D, B, T, in]; `state` (h [D, B, P], c [D, B, H]); `step_mask` [B, T] or None; `directions`
        picks the D LSTMs that run (all: D = 2; `slice(0, 1)`: the forward LM alone).

        With a step mask, rows keep their state through the steps it leaves out (padding, before or after a row's
        tokens), so the final state is each row's own; without one, steps past a row's end run on padding (their
        outputs are masked by the caller).
        The loop runs feature-major (gates [2, 4H, B] = W_hh · h, not h · W_hhᵀ): MKL multiplies a stored weight
        by a few columns faster than a few rows by a transposed weight, and each gate is then a contiguous block.
        """
        count, batch, steps, _ = inputs.shape
        weight_ih, weight_hh, bias, weight_hr = (weight[directions] for weight in
                                                 (self.weight_ih, self.weight_hh, self.bias, self.weight_hr))
        # x · W_ih for all steps in one product, [D, 4H, T·B]: the columns of step t are t·B ... t·B + B − 1.
        step_major = inputs.transpose(1, 2).reshape(count, steps * batch, -1)
        input_gates = torch.baddbmm(bias.unsqueeze(2), weight_ih, step_major.transpose(1, 2))
        hidden, cell = (part.transpose(1, 2) for part in state)  # [D, P, B], [D, H, B]
        outputs = []
        for step in range(steps):
            gates = torch.baddbmm(input_gates[:, :, step * batch: (step + 1) * batch], weight_hh, hidden)
            input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=1)
            new_cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
            if cell_clip is not None:
                new_cell = new_cell.clamp(-cell_clip, cell_clip)
            new_hidden = torch.bmm(weight_hr, torch.sigmoid(output_gate) * torch.tanh(new_cell))
            if proj_clip is not None:
                new_hidden = new_hidden.clamp(-proj_clip, proj_clip)
            if step_mask is None:
                hidden, cell = new_hidden, new_cell
            else:
                active = step_mask[:, step].view(1, 1, batch)
                hidden, cell = torch.where(active, new_hidden, hidden), torch.where(active, new_cell, cell)
            outputs.append(new_hidden)
        final_state = (hidden.transpose(1, 2), cell.transpose(1, 2))
        return torch.stack(outputs, dim=1).permute(0, 3, 1, 2), final_state  # [D, B, T, P]

    def run_fused(self, inputs, state):
        """torch's fused LSTM on each direction, without clipping; outputs [2, B, T, P]."""
        hidden, cell = state
        no_second_bias = self.bias.new_zeros(self.bias.shape[1])  # nn.LSTM's b_hh; our one bias is b_ih
        outputs = []
        for direction in range(2):
            weights = [self.weight_ih[direction], self.weight_hh[direction], self.bias[direction], no_second_bias,
                       self.weight_hr[direction]]
            # The functional form of nn.LSTM(batch_first=True, proj_size=P), one layer, one direction.
            output, _, _ = torch.lstm(inputs[direction], (hidden[direction, None], cell[direction, None]), weights,
                                      True, 1, 0.0, self.training, False, True)
            outputs.append(output)
        return torch.stack(outputs)

    @torch.no_grad()
    def clipping_never_binds(self, inputs, outputs, state, step_mask, cell_clip, proj_clip):
        """Whether the unclipped trajectory `outputs` (from `run_fused`) stays inside both clips at every real step.

        The projected outputs are checked as they are; the cell values, which the fused kernel does not return,
        are recomputed from the gates at h_{t-1} (known from the outputs) with a safety margin.
        """
        valid = step_mask[None, :, :, None]
        if proj_clip is not None and (outputs.abs() * valid).amax() > proj_clip:
            return False
        if cell_clip is None:
            return True
        hidden, cell = state
        previous = torch.cat([hidden.unsqueeze(2), outputs[:, :, :-1]], dim=2)
        gates = torch.baddbmm(self.bias.unsqueeze(1), inputs.flatten(1, 2), self.weight_ih.transpose(1, 2))
        gates = gates + torch.bmm(previous.flatten(1, 2), self.weight_hh.transpose(1, 2))
        input_gate, forget_gate, candidate, _ = gates.view(*outputs.shape[:3], -1).chunk(4, dim=-1)
        forget_gate = torch.sigmoid(forget_gate)
        written = torch.sigmoid(input_gate) * torch.tanh(candidate)
        largest = torch.zeros_like(cell)
        for step in range(outputs.shape[2]):
            cell = torch.addcmul(written[:, :, step], forget_gate[:, :, step], cell)
            largest = torch.maximum(largest, cell.abs() * valid[:, :, step])
        return bool(largest.amax() < cell_clip * (1 - CLIP_CHECK_MARGIN))


def reverse_within_lengths(sequences, lengths):
    """Each row of `sequences` [B, T, ...] reversed over its first `lengths[b]` steps; the rest stays in place.

    Applying it twice gives the input back.
    """
    steps = torch.arange(sequences.shape[1], device=sequences.device)
    index = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    index = index.view(*index.shape, *([1] * (sequences.dim() - 2))).expand_as(sequences)
    return sequences.gather(1, index)


class HfcmElmoBiLstm(nn.Module):
    """Token vectors [B, T, P] -> each layer's [forward; backward] outputs [B, T, 2P], zeros at padding."""

    def __init__(self, config):
        super().__init__()
        self.layers = nn.ModuleList(
            HfcmElmoLstmLayer(config.hidden_size, config.intermediate_size, config.hidden_size)
            for _ in range(config.num_hidden_layers)
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)  # bilm-tf: on every layer's input, in training
        self.config = config
        self.last_implementation = None

    def initial_state(self, batch_size, device=None, dtype=None):
        """Zeros: (h [layers, 2, B, P], c [layers, 2, B, H]), the state every stateless call starts from."""
        layer = self.layers[0]
        projection_size, cell_size = layer.weight_hr.shape[1], layer.cell_size
        options = dict(device=device or layer.weight_hr.device, dtype=dtype or layer.weight_hr.dtype)
        return (torch.zeros(len(self.layers), 2, batch_size, projection_size, **options),
                torch.zeros(len(self.layers), 2, batch_size, cell_size, **options))

    def _choose(self, inputs, keep_final_state):
        if keep_final_state:
            return "exact"  # the fused kernel on padded rows cannot return each row's own final state
        if self.config.lstm_implementation == "auto":
            return "exact" if inputs.device.type == "cpu" else "fused"
        return self.config.lstm_implementation

    def _run_layer(self, layer, inputs, state, mask, implementation, keep_final_state):
        cell_clip, proj_clip = self.config.cell_clip, self.config.proj_clip
        if implementation == "fused":
            outputs = layer.run_fused(inputs, state)
            if cell_clip is None and proj_clip is None:
                return outputs, None, "fused"
            if layer.clipping_never_binds(inputs, outputs, state, mask, cell_clip, proj_clip):
                return outputs, None, "fused (verified: no clip binds)"
            implementation = "exact (a clip binds on the fused trajectory)"
        outputs, final = layer.run_exact(inputs, state, mask if keep_final_state else None, cell_clip, proj_clip)
        return outputs, final, implementation

    def forward(self, tokens, mask, state=None):
        """`tokens` [B, T, P], `mask` [B, T] (bool, right-padded), `state` as `initial_state` or None.

        Returns (the layers' outputs, each [B, T, 2P]; the final state when `state` was given, else None).
        """
        keep_final_state = state is not None
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device, tokens.dtype)
        lengths = mask.sum(1)
        inputs = torch.stack([tokens, reverse_within_lengths(tokens, lengths)])
        implementation = self._choose(tokens, keep_final_state)
        used, outputs_per_layer, final_states = [], [], []
        for index, layer in enumerate(self.layers):
            inputs = self.dropout(inputs)
            outputs, final, path = self._run_layer(layer, inputs, (state[0][index], state[1][index]), mask,
                                                   implementation, keep_final_state)
            used.append(path)
            final_states.append(final)
            if self.config.use_skip_connections and index > 0:
                outputs = outputs + inputs
            outputs = outputs * mask[None, :, :, None]
            outputs_per_layer.append(torch.cat([outputs[0], reverse_within_lengths(outputs[1], lengths)], dim=-1))
            inputs = outputs
        self.last_implementation = ", ".join(sorted(set(used)))
        logger.debug("ELMo biLSTM ran: %s", self.last_implementation)
        if not keep_final_state:
            return outputs_per_layer, None
        return outputs_per_layer, tuple(torch.stack([final[part] for final in final_states]) for part in (0, 1))

    def forward_lm(self, tokens, mask, state):
        """The forward LM alone, for generation: `tokens` [B, T, P]; `mask` [B, T] (padding anywhere, e.g. on the
        left: a row's state is carried through it unchanged); `state` (h [layers, B, P], c [layers, B, H]), the
        state after the row's previous tokens. Returns the top layer's forward outputs [B, T, P] (zeros at padding)
        and the state after the last step. Always the exact loop: one step at a time is what generation runs."""
        inputs, hidden, cell = tokens.unsqueeze(0), [], []
        for index, layer in enumerate(self.layers):
            inputs = self.dropout(inputs)
            outputs, (last_hidden, last_cell) = layer.run_exact(
                inputs, (state[0][index, None], state[1][index, None]), mask, self.config.cell_clip,
                self.config.proj_clip, directions=slice(0, 1))
            if self.config.use_skip_connections and index > 0:
                outputs = outputs + inputs
            hidden.append(last_hidden[0])
            cell.append(last_cell[0])
            inputs = outputs
        self.last_implementation = "exact"
        return inputs[0] * mask[..., None], (torch.stack(hidden), torch.stack(cell))
