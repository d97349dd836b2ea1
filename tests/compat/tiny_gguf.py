"""Write a tiny llama-architecture GGUF model with random weights whose vocabulary is a given
``tokenizer.json`` (a byte-level BPE): ``python tiny_gguf.py tokenizer.json out.gguf``.

Run by the llama-cpp-python venv's Python (it has ``gguf`` and numpy); the gateway counts
tokens with the same ``tokenizer.json``, as it would with a real model's. The model generates
random tokens, quickly: 2 layers, 64 dimensions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gguf
import numpy as np

EMBED, HEADS, FFN, LAYERS, CONTEXT = 64, 4, 128, 2, 512
BOS, EOS = "<|bos|>", "<|eos|>"
# a chat template of the model's own, as real GGUF files carry (llama-cpp-python uses it)
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "<|assistant|>")


def write(tokenizer_json: str, out: str) -> None:
    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    vocab: dict[str, int] = spec["model"]["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    specials = {t["content"]: t["id"] for t in spec["added_tokens"]}
    every = {**vocab, **specials}
    tokens = [""] * len(every)
    for text, index in every.items():
        tokens[index] = text
    types = [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens]
    w = gguf.GGUFWriter(out, "llama")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(EMBED)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(EMBED // HEADS)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(specials[BOS])
    w.add_eos_token_id(specials[EOS])
    w.add_chat_template(TEMPLATE)
    rng = np.random.default_rng(16)

    def tensor(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.5).astype(np.float32))

    n = len(tokens)
    tensor("token_embd.weight", n, EMBED)
    w.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    tensor("output.weight", n, EMBED)
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        for part in ("q", "k", "v", "output"):
            tensor(f"blk.{i}.attn_{part}.weight", EMBED, EMBED)
        tensor(f"blk.{i}.ffn_gate.weight", FFN, EMBED)
        tensor(f"blk.{i}.ffn_up.weight", FFN, EMBED)
        tensor(f"blk.{i}.ffn_down.weight", EMBED, FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    write(sys.argv[1], sys.argv[2])
