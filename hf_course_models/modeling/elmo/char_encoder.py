"""ELMo's context-independent token representation, computed from characters only (Peters et al. 2018, §3.4).

Character ids -> embedding -> one convolution per width, max over character positions, activation ->
highway layers -> linear projection, exactly as bilm-tf. Three exact savings over running this on every row of
the [batch, seq, 50] input (as AllenNLP does): each distinct token is encoded once (padding tokens never), the
character axis is cut to what the longest token needs (see `trim_padding_characters`), and the convolutions
are computed as sums of looked-up rows instead of multiplications (see `HfcmElmoCharacterEncoder.convolve`).
"""
import torch
import torch.nn.functional as F
from torch import nn

CHAR_PADDING = 261  # pads a token's characters after its end-of-word marker
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


def linear_on_columns(linear, columns):
    """`linear` applied to each column of `columns` [in, N]: W·columns + b, [out, N]. On our CPUs MKL runs this
    product of the stored (out, in) weight about 10% faster than nn.Linear's rows · Wᵀ for a few hundred tokens."""
    return torch.addmm(linear.bias[:, None], linear.weight, columns)


class HfcmElmoHighway(nn.Module):
    """bilm-tf's highway layer: y = t·relu(x·W_transform + b_transform) + (1 − t)·x,
    with t = σ(x·W_carry + b_carry); it reads and returns one token per column ([size, N])."""

    def __init__(self, size):
        super().__init__()
        self.carry = nn.Linear(size, size)
        self.transform = nn.Linear(size, size)
        self.carry.hfcm_init = "highway_carry"
        self.transform.hfcm_init = "highway_transform"

    def forward(self, columns):
        gate = torch.sigmoid(linear_on_columns(self.carry, columns))
        return gate * torch.relu(linear_on_columns(self.transform, columns)) + (1 - gate) * columns


def characters_used(char_rows):
    """Per row of `char_rows` [N, C]: the position just after its last non-padding character (0 for none)."""
    positions = torch.arange(1, char_rows.shape[1] + 1, device=char_rows.device)
    return ((char_rows != CHAR_PADDING) * positions).amax(-1)


def trim_padding_characters(char_rows, widest_filter):
    """`char_rows` [N, C] cut to min(C, L + widest_filter) columns, L = the longest row's last non-padding position.

    Why this is exact: every window beyond L is made only of CHAR_PADDING and so has one and the same
    convolution value. After the cut each row still ends in at least `widest_filter` padding characters, so
    it keeps at least one such all-padding window for every width, and the max over positions sees exactly the
    same set of values. When L + widest_filter >= C (e.g. a token of 48 bytes) nothing is cut.
    """
    longest = int(characters_used(char_rows).amax()) if char_rows.numel() else 0
    return char_rows[:, : min(char_rows.shape[1], longest + widest_filter)]


class HfcmElmoCharacterEncoder(nn.Module):
    """Character ids [batch, seq, chars] -> token vectors [batch, seq, hidden_size], zeros at padding tokens."""

    def __init__(self, config):
        super().__init__()
        self.char_embedding = nn.Embedding(config.char_vocab_size, config.char_embedding_size, padding_idx=0)
        self.char_embedding.hfcm_init = "char_embedding"
        # Conv1d modules hold each width's weights as checkpoints store them; `convolve` computes them as tables.
        self.convolutions = nn.ModuleList(
            nn.Conv1d(config.char_embedding_size, count, width) for width, count in config.char_filters
        )
        for convolution in self.convolutions:
            convolution.hfcm_init = "char_convolution"
        self.activation = ACTIVATIONS[config.char_cnn_activation]
        self.highways = nn.ModuleList(HfcmElmoHighway(config.num_char_filters)
                                      for _ in range(config.num_highway_layers))
        self.projection = nn.Linear(config.num_char_filters, config.hidden_size)
        self.projection.hfcm_init = "char_projection"
        self.widest_filter = max(width for width, _ in config.char_filters)

    def convolve(self, char_rows):
        """The character CNN's features of every row of `char_rows` [N, chars], one column per row:
        [num_char_filters, N].

        A window's convolution is a sum over its offsets j of W_j · e(c_j), and a character's embedding e(c) takes
        one of only `char_vocab_size` values. So each convolution becomes a table with one row per (character,
        offset), one small matmul per call, and every window a sum of `width` looked-up rows (`embedding_bag`):
        16x fewer operations than the convolution's multiply-adds, and the same sum up to rounding order.
        """
        # A fresh (aligned) copy: MKL rounds this skinny product differently for an operand at an unaligned
        # address, as a tensor loaded from a checkpoint can be, and a reloaded model must give identical outputs.
        embedding = self.char_embedding.weight.clone()  # [chars, char_embedding_size]
        features = []
        for convolution in self.convolutions:
            width = convolution.kernel_size[0]
            # row c·width + j: what character c adds to each filter at offset j of a window
            table = (embedding @ convolution.weight.permute(1, 2, 0).flatten(1)).view(-1, convolution.out_channels)
            windows = char_rows.unfold(1, width, 1) * width + torch.arange(width, device=char_rows.device)
            sums = F.embedding_bag(windows.flatten(0, 1), table, mode="sum").view(*windows.shape[:2], -1)
            # bilm-tf: max over positions, then the activation (the bias moves past the max: it is monotonic).
            features.append((sums.amax(1) + convolution.bias).T)
        return self.activation(torch.cat(features))

    def project(self, features):
        """Highway layers and the projection: character CNN features [num_char_filters, N] -> [N, hidden_size]."""
        for highway in self.highways:
            features = highway(features)
        return linear_on_columns(self.projection, features).T

    def encode(self, char_rows):
        """The representation of every row of `char_rows` [N, chars] (no distinct-token or trimming shortcuts)."""
        return self.project(self.convolve(char_rows))

    def forward(self, char_ids, mask):
        """`char_ids` [batch, seq, chars]; `mask` [batch, seq] (bool) marks the real tokens."""
        tokens = char_ids[mask]
        output_shape = (*mask.shape, self.projection.out_features)
        if tokens.shape[0] == 0:
            return self.projection.weight.new_zeros(output_shape)
        distinct, index = torch.unique(tokens, dim=0, return_inverse=True)
        encoded = self.project(self.convolve(trim_padding_characters(distinct, self.widest_filter)))
        return encoded.new_zeros(output_shape).index_put((mask,), encoded[index])
