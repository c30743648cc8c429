"""ELMo's context-independent token representation, computed from characters only (Peters et al. 2018, §3.4).

Character ids -> embedding -> one convolution per width, max over character positions, activation ->
highway layers -> linear projection, exactly as bilm-tf. Two exact savings over running this on every row of
the [batch, seq, 50] input (as AllenNLP does): each distinct token is encoded once (padding tokens never), and
the convolutions run on tokens grouped by length, each group's character axis cut to what its longest token
needs (see `trim_padding_characters`).
"""
import torch
from torch import nn

CHAR_PADDING = 261  # pads a token's characters after its end-of-word marker
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


class HfcmElmoHighway(nn.Module):
    """bilm-tf's highway layer: y = t·relu(x·W_transform + b_transform) + (1 − t)·x,
    with t = σ(x·W_carry + b_carry)."""

    def __init__(self, size):
        super().__init__()
        self.carry = nn.Linear(size, size)
        self.transform = nn.Linear(size, size)
        self.carry.hfcm_init = "highway_carry"
        self.transform.hfcm_init = "highway_transform"

    def forward(self, inputs):
        gate = torch.sigmoid(self.carry(inputs))
        return gate * torch.relu(self.transform(inputs)) + (1 - gate) * inputs


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
        """The character CNN's features [N, num_char_filters] of every row of `char_rows` [N, chars]."""
        embedded = self.char_embedding(char_rows).transpose(1, 2)  # [N, char_embedding_size, chars]
        # bilm-tf: max over positions, then the activation.
        features = torch.cat([convolution(embedded).amax(-1) for convolution in self.convolutions], dim=-1)
        return self.activation(features)

    def convolve_by_length(self, char_rows):
        """`convolve`, with the rows grouped by length and each group cut to what its longest row needs: short
        words no longer pay for the longest word's characters (exact, see `trim_padding_characters`)."""
        lengths = characters_used(char_rows)
        groups = [(lengths == length).nonzero().squeeze(1) for length in lengths.unique().tolist()]
        features = torch.cat([self.convolve(trim_padding_characters(char_rows[rows], self.widest_filter))
                              for rows in groups])
        return features[torch.cat(groups).argsort()]  # back to the order of `char_rows`

    def project(self, features):
        """Highway layers and the projection: character CNN features [N, num_char_filters] -> [N, hidden_size]."""
        for highway in self.highways:
            features = highway(features)
        return self.projection(features)

    def encode(self, char_rows):
        """The representation of every row of `char_rows` [N, chars], as bilm-tf computes it (no shortcuts)."""
        return self.project(self.convolve(char_rows))

    def forward(self, char_ids, mask):
        """`char_ids` [batch, seq, chars]; `mask` [batch, seq] (bool) marks the real tokens."""
        tokens = char_ids[mask]
        output_shape = (*mask.shape, self.projection.out_features)
        if tokens.shape[0] == 0:
            return self.projection.weight.new_zeros(output_shape)
        distinct, index = torch.unique(tokens, dim=0, return_inverse=True)
        encoded = self.project(self.convolve_by_length(distinct))
        return encoded.new_zeros(output_shape).index_put((mask,), encoded[index])
