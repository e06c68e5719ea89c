"""Self-attention with a padding mask as Hugging Face writes it (transformers' BERT with the
SDPA attention: `BertSdpaSelfAttention`): embeddings, the extended additive mask
(`get_extended_attention_mask`: (1 - mask) * dtype min, shape B x 1 x 1 x S), per-layer
query/key/value Linears, `F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
dropout_p=0.1)`, output dense + LayerNorm, GELU intermediate. It takes `input_ids` and
`attention_mask`, both int64.

    sa-profile fit examples/zoo/bert.py:bert_mini --input input_ids=128:int64 --input attention_mask=128:int64 --batch 16 --gpu t4
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BertEmbeddings(nn.Module):
    def __init__(self, vocab_size, hidden, max_positions):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(0.1)
        self.register_buffer("position_ids", torch.arange(max_positions).expand((1, -1)), persistent=False)
        self.register_buffer("token_type_ids", torch.zeros(self.position_ids.size(), dtype=torch.long), persistent=False)

    def forward(self, input_ids):
        seq = input_ids.shape[1]
        emb = self.word_embeddings(input_ids) + self.token_type_embeddings(self.token_type_ids[:, :seq])
        emb = emb + self.position_embeddings(self.position_ids[:, :seq])
        return self.dropout(self.LayerNorm(emb))


class BertSdpaSelfAttention(nn.Module):
    def __init__(self, hidden, heads, dropout=0.1):
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout_prob = dropout

    def transpose_for_scores(self, x):
        x = x.view(x.size()[:-1] + (self.num_attention_heads, self.attention_head_size))
        return x.permute(0, 2, 1, 3)

    def forward(self, hidden_states, attention_mask):
        q = self.transpose_for_scores(self.query(hidden_states))
        k = self.transpose_for_scores(self.key(hidden_states))
        v = self.transpose_for_scores(self.value(hidden_states))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask,
                                             dropout_p=self.dropout_prob if self.training else 0.0, is_causal=False)
        out = out.transpose(1, 2)
        return out.reshape(out.shape[0], out.shape[1], -1)


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, intermediate):
        super().__init__()
        self.attention = BertSdpaSelfAttention(hidden, heads)
        self.attention_output = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x, mask):
        a = self.attention_norm(self.dropout(self.attention_output(self.attention(x, mask))) + x)
        return self.output_norm(self.dropout(self.output(F.gelu(self.intermediate(a)))) + a)


class BertModel(nn.Module):
    def __init__(self, vocab_size=30522, hidden=256, layers=4, heads=4, intermediate=1024, max_positions=512):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, hidden, max_positions)
        self.layer = nn.ModuleList([BertLayer(hidden, heads, intermediate) for _ in range(layers)])
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids, attention_mask):
        dtype = self.embeddings.word_embeddings.weight.dtype
        extended = attention_mask[:, None, None, :].to(dtype=dtype)
        extended = (1.0 - extended) * torch.finfo(dtype).min
        hidden = self.embeddings(input_ids)
        for layer in self.layer:
            hidden = layer(hidden, extended)
        return {"last_hidden_state": hidden, "pooler_output": torch.tanh(self.pooler(hidden[:, 0]))}


def bert_mini(vocab_size=30522, hidden=256, layers=4, heads=4):
    """BERT-mini: 256 wide, 4 layers of 4 heads of 64."""
    return BertModel(vocab_size, hidden, layers, heads, hidden * 4)
