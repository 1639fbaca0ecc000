#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/seeds (fuzz/README.md lists what each target gets).

Python standard library only. The GGUF layout follows gguf/src/reader.rs's description, the
safetensors one the format (u64 header length, JSON header, data), the zstd frames RFC 8878's
frame and block headers. Seeds copied from the repository's own files are copied by
`copy_repo_seeds` below. Run from anywhere: `python3 fuzz/make_seeds.py`; the output is the
same byte for byte on every run.
"""

import gzip
import json
import shutil
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
SEEDS = FUZZ / "seeds"


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def copy_repo_seeds():
    for target, rel, name in [
        ("config_json", "assets/tiny/config.json", "tiny.json"),
        ("config_json", "tests/fixtures/llama-mha/config.json", "llama-mha.json"),
        ("config_json", "tests/fixtures/llama-gqa-tied-bf16-sharded/config.json", "gqa-tied.json"),
        ("config_json", "tests/fixtures/llama3-bias/config.json", "llama3-bias.json"),
        ("gguf", "gguf/tests/fixtures/v2.gguf", "v2.gguf"),
        ("gguf", "gguf/tests/fixtures/types_v3.gguf", "types_v3.gguf"),
        ("recipe", "assets/recipes/default.toml", "default.toml"),
        ("recipe", "assets/recipes/llama2-7b-to-sheared-1.3b.toml", "sheared-1.3b.toml"),
        ("recipe", "assets/recipes/smollm2-135m-sheared.toml", "smollm2.toml"),
        ("jsonl", "assets/tasks/capitals.jsonl", "capitals.jsonl"),
    ]:
        (SEEDS / target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, SEEDS / target / name)


# ---------------------------------------------------------------------------------- config.json

def config_seeds():
    base = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "rms_norm_eps": 1e-05, "max_position_embeddings": 131072,
        "tie_word_embeddings": True, "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009], "rope_theta": 500000.0,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    }
    write("config_json", "llama3.1-rope-scaling.json", json.dumps(base, indent=1))
    params = dict(base)
    del params["rope_scaling"], params["rope_theta"]
    params["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    params["attention_bias"] = True
    params["dtype"] = "bfloat16"
    write("config_json", "rope-parameters-linear.json", json.dumps(params))
    small = {"model_type": "llama", "vocab_size": 8, "hidden_size": 6, "intermediate_size": 4,
             "num_hidden_layers": 1, "num_attention_heads": 3, "head_dim": 4,
             "eos_token_id": 2, "pad_token_id": None, "mlp_bias": False}
    write("config_json", "head-dim-not-hidden-over-heads.json", json.dumps(small))


# ------------------------------------------------------------------------------------- safetensors

def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw bytes)] -> file bytes."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def f32(*v):
    return struct.pack(f"<{len(v)}f", *v)


def safetensors_seeds():
    write("safetensors_header", "f32-model.safetensors", safetensors([
        ("model.embed_tokens.weight", "F32", [4, 2], f32(*range(8))),
        ("model.layers.0.self_attn.q_proj.weight", "F32", [2, 2], f32(1, 2, 3, 4)),
        ("model.norm.weight", "F32", [2], f32(1, 1)),
        ("model.layers.0.self_attn.rotary_emb.inv_freq", "F32", [1], f32(1)),
    ], {"format": "pt"}))
    bf16 = bytes([0x80, 0x3F, 0x00, 0x40, 0x40, 0x40, 0x80, 0x40])  # 1, 2, 3, 4
    f16 = bytes([0x00, 0x3C, 0x00, 0xC0])  # 1, -2
    write("safetensors_header", "half-and-unsupported.safetensors", safetensors([
        ("lm_head.weight", "BF16", [2, 2], bf16),
        ("model.layers.0.input_layernorm.weight", "F16", [2], f16),
        ("position_ids", "I64", [2], struct.pack("<2q", 0, 1)),
        ("empty", "F32", [0, 3], b""),
    ]))
    write("safetensors_header", "no-tensors.safetensors", safetensors([], {"format": "pt"}))


# -------------------------------------------------------------------------------------------- GGUF

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(ty, v):
    fmt = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?",
           U64: "Q", I64: "q", F64: "d"}
    if ty == STR:
        return gguf_str(v)
    if ty == ARR:
        elem, items = v
        return struct.pack("<IQ", elem, len(items)) + b"".join(gguf_value(elem, x) for x in items)
    return struct.pack("<" + fmt[ty], v)


def half_bits(x):
    return struct.unpack("<H", struct.pack("<e", x))[0]


def encode(ggml, values):
    if ggml == GGML_F32:
        return struct.pack(f"<{len(values)}f", *values)
    if ggml == GGML_F16:
        return struct.pack(f"<{len(values)}e", *values)
    # Q8_0: blocks of 32 values, f16 scale then 32 int8.
    out = b""
    for i in range(0, len(values), 32):
        block = values[i:i + 32]
        d = max(abs(v) for v in block) / 127 or 1.0
        out += struct.pack("<H", half_bits(d))
        out += bytes((round(v / d) & 0xFF) for v in block)
    return out


def gguf(kvs, tensors, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, row-major shape, ggml type, values)]."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, ty, v in kvs:
        out += gguf_str(key) + struct.pack("<I", ty) + gguf_value(ty, v)
    data = b""
    for name, shape, ggml, values in tensors:
        data += b"\0" * (-len(data) % alignment)
        dims = list(reversed(shape))
        out += gguf_str(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml, len(data))
        data += encode(ggml, values)
    out += b"\0" * (-len(out) % alignment)
    return out + data


def ramp(n, k):
    return [((i * 7 + k) % 11 - 5) / 8 for i in range(n)]


def llama_gguf(tokenizer, tied, biases, rope, wide=False, size_type=U32):
    # hidden 8 (32 with `wide`, for Q8_0 rows), 2 heads of 4 (16), 1 KV head, FFN 8, vocab 6.
    h = 32 if wide else 8
    hd, heads, kv, f, layers = h // 2, 2, 1, 8, 1
    q, k = heads * hd, kv * hd
    kvs = [
        ("general.architecture", STR, "llama"),
        ("general.name", STR, "fuzz seed"),
        ("llama.block_count", size_type, layers),
        ("llama.context_length", size_type, 64),
        ("llama.embedding_length", size_type, h),
        ("llama.feed_forward_length", size_type, f),
        ("llama.attention.head_count", size_type, heads),
        ("llama.attention.head_count_kv", size_type, kv),
        ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        ("llama.rope.freq_base", F32, 10000.0),
        ("llama.rope.dimension_count", size_type, hd),
        ("llama.vocab_size", U32, 6),
    ]
    if size_type == U64:
        kvs += [("llama.attention.key_length", U64, hd), ("llama.attention.value_length", U64, hd)]
    if rope == "linear":
        kvs += [("llama.rope.scaling.type", STR, "linear"), ("llama.rope.scaling.factor", F32, 2.0)]
    if rope == "yarn":
        kvs += [("llama.rope.scaling.type", STR, "yarn"), ("llama.rope.scaling.factor", F32, 4.0),
                ("llama.rope.scaling.original_context_length", U32, 16),
                ("llama.rope.scaling.yarn_beta_fast", F32, 32.0)]
    if rope == "llama3":
        kvs += [("llama.rope.scaling.original_context_length", U32, 16)]
    if tokenizer == "gpt2":
        kvs += [
            ("tokenizer.ggml.model", STR, "gpt2"),
            ("tokenizer.ggml.pre", STR, "smollm"),
            ("tokenizer.ggml.tokens", ARR, (STR, ["<|endoftext|>", "a", "b", "ab", "Ġ", "Ġab"])),
            ("tokenizer.ggml.token_type", ARR, (I32, [3, 1, 1, 1, 1, 1])),
            ("tokenizer.ggml.merges", ARR, (STR, ["a b", "Ġ ab"])),
            ("tokenizer.ggml.bos_token_id", U32, 0),
            ("tokenizer.ggml.eos_token_id", U32, 0),
            ("tokenizer.ggml.padding_token_id", U32, 0),
            ("tokenizer.chat_template", STR, "{% for m in messages %}{{ m.content }}{% endfor %}"),
        ]
    if tokenizer == "llama":
        kvs += [
            ("tokenizer.ggml.model", STR, "llama"),
            ("tokenizer.ggml.tokens", ARR, (STR, ["<unk>", "<s>", "</s>", "<0x41>", "▁a", "▁ab"])),
            ("tokenizer.ggml.scores", ARR, (F32, [0.0, 0.0, 0.0, 0.0, -1.0, -2.0])),
            ("tokenizer.ggml.token_type", ARR, (I32, [2, 3, 3, 6, 1, 4])),
            ("tokenizer.ggml.bos_token_id", U32, 1),
            ("tokenizer.ggml.eos_token_id", U32, 2),
            ("tokenizer.ggml.unknown_token_id", U32, 0),
            ("tokenizer.ggml.add_bos_token", BOOL, True),
            ("tokenizer.ggml.add_space_prefix", BOOL, True),
        ]
    wq = GGML_Q8_0 if wide else GGML_F16
    tensors = [("token_embd.weight", [6, h], GGML_F32, ramp(6 * h, 0))]
    for l in range(layers):
        for name, shape, ty in [
            ("attn_q", [q, h], wq), ("attn_k", [k, h], wq), ("attn_v", [k, h], GGML_F32),
            ("attn_output", [h, q], wq), ("ffn_gate", [f, h], wq), ("ffn_up", [f, h], wq),
            ("ffn_down", [h, f], GGML_F32 if wide else GGML_F16),
        ]:
            tensors.append((f"blk.{l}.{name}.weight", shape, ty, ramp(shape[0] * shape[1], l + 1)))
        tensors += [(f"blk.{l}.attn_norm.weight", [h], GGML_F32, [1.0] * h),
                    (f"blk.{l}.ffn_norm.weight", [h], GGML_F32, [1.0] * h)]
        if biases:
            tensors += [(f"blk.{l}.attn_q.bias", [q], GGML_F32, ramp(q, 3)),
                        (f"blk.{l}.attn_k.bias", [k], GGML_F32, ramp(k, 4)),
                        (f"blk.{l}.ffn_up.bias", [f], GGML_F32, ramp(f, 5))]
    tensors.append(("output_norm.weight", [h], GGML_F32, [1.0] * h))
    if not tied:
        tensors.append(("output.weight", [6, h], GGML_F32, ramp(6 * h, 9)))
    if rope == "llama3":
        # Llama-3 rope factors for head_dim/2 frequencies: low ones divided by the factor.
        factors = [1.0] * (hd // 4) + [8.0] * (hd // 2 - hd // 4)
        tensors.append(("rope_freqs.weight", [hd // 2], GGML_F32, factors))
    return gguf(kvs, tensors)


def gguf_seeds():
    write("gguf", "llama-gpt2-biases.gguf", llama_gguf("gpt2", tied=False, biases=True, rope=None))
    write("gguf", "llama-spm-tied-llama3.gguf",
          llama_gguf("llama", tied=True, biases=False, rope="llama3"))
    write("gguf", "llama-q8-linear.gguf", llama_gguf(None, tied=False, biases=False, rope="linear",
                                                     wide=True))
    write("gguf", "llama-yarn.gguf", llama_gguf("gpt2", tied=True, biases=False, rope="yarn"))
    # Sizes as u64 (the reader takes any integer type), so mutations reach values past u32.
    write("gguf", "llama-u64-sizes.gguf", llama_gguf(None, tied=True, biases=True, rope=None,
                                                     size_type=U64))


# ------------------------------------------------------------------------------------------ recipe

RECIPE_ALL = """\
[model]
source = "tiny"
target = "layers=2,hidden=64,heads=2,kv_heads=2,intermediate=128"
dtype = "bf16"
precision = "f32"

[data]
seq_len = 16
seed = 1
text_field = "content"
eval_sequences = 2
prune_tokens = 1000
train_tokens = 5000
proportions = "uniform"

[[data.domain]]
name = "web"
paths = ["web.jsonl", "a.txt"]

[[data.domain]]
name = "code"
paths = ["code"]

[dynamic]
update_rule = "paper"
eval_batch = 2
eval_sequences = 4

[dynamic.reference]
values = { web = 2.5, code = 1.25 }

[prune]
steps = 10
batch = 2
grad_accum = 2
lr_warmup = 1
lagrangian_warmup = 2
update_every = 5
proportions = { web = 0.25, code = 0.75 }
temperature = 0.83
layer_masks = "head-layer-mlp"
prune = "hidden,heads,intermediate"
save_every = 5
keep_checkpoints = 3

[train]
enabled = true
steps = 20
warmup = 2
proportions = "tokens"
distill = true
distill_weight = 0.5
distill_temperature = 2.0

[eval]
tasks = ["tasks/capitals.jsonl"]
batch = 4
max_sequences = 8

[compare]
scratch_lr = 0.003
scratch_warmup = 1

[run]
devices = 2
max_skipped = 5
"""

RECIPE_PRESET = """\
[model]
source = "meta-llama/Llama-2-7b-hf"
preset = "sheared-1.3b"

[data]
[[data.domain]]
name = "a"
paths = ["a.txt"]

[dynamic]
reference = "llama2"

[train]
enabled = false
proportions = "redpajama"
"""


def recipe_seeds():
    write("recipe", "every-section.toml", RECIPE_ALL)
    write("recipe", "preset.toml", RECIPE_PRESET)


# ------------------------------------------------------------------------------------- manifest


def manifest(seq_len, width, web, code_splits):
    def split(file, sequences, documents):
        return {"file": file, "sequences": sequences, "documents": documents}

    return json.dumps({
        "format": 1, "seq_len": seq_len, "token_width": width, "vocab_size": 100,
        "tokenizer_fingerprint": "ab12", "inputs_fingerprint": "cd34", "seed": 7,
        "domains": [
            {"name": "web", "sources": [{"path": "corpus/web.jsonl", "bytes": 120}],
             "documents": 3, "tokens": 64,
             "splits": {"eval": split("eval/web.bin", web[0], 1),
                        "prune": split("prune/web.bin", 0, 0),
                        "train": split("train/web.bin", web[1], 2)}},
            {"name": "code", "sources": [], "documents": 1, "tokens": 10,
             "splits": code_splits},
        ],
    }, indent=1)


def manifest_seeds():
    # The shards fuzz/src/shard_manifest.rs writes: eval/web.bin 16 bytes, prune/web.bin 0,
    # train/web.bin 48, eval/code.bin 8, train/code.bin 12.
    write("shard_manifest", "u16-seq4.json", manifest(
        4, "u16", (2, 6), {"eval": {"file": "eval/code.bin", "sequences": 1, "documents": 1}}))
    write("shard_manifest", "u32-seq2.json", manifest(
        2, "u32", (2, 6), {"train": {"file": "train/code.bin", "sequences": 1, "documents": 1}}))
    write("shard_manifest", "u16-seq2-complete.json", manifest(2, "u16", (4, 12), {
        "eval": {"file": "eval/code.bin", "sequences": 2, "documents": 1},
        "train": {"file": "train/code.bin", "sequences": 3, "documents": 1}}))


# ------------------------------------------------------------------------------------------ JSONL

CORPUS = (
    '{"text": "fn main() {\\n    println!(\\"hi\\");\\n}\\n", "meta": {"lang": "rust"}}\n'
    "\n"
    '{"text": "caf\\u00e9 \\ud83d\\ude00 tab\\there", "id": 2}\n'
    '{"id": 3, "text": ""}\n'
)


def zstd_raw_frame(payload):
    # Magic, frame header descriptor 0x20 (single segment, 1-byte content size), content size,
    # then one raw block: 3-byte header (last block, type raw, size) and the bytes.
    assert len(payload) < 256
    block = struct.pack("<I", 1 | (0 << 1) | (len(payload) << 3))[:3]
    return b"\x28\xb5\x2f\xfd" + bytes([0x20, len(payload)]) + block + payload


def zstd_rle_frame(byte, count):
    # No content size (descriptor 0x00, window descriptor 0x00: 1 KiB window); one RLE block.
    block = struct.pack("<I", 1 | (1 << 1) | (count << 3))[:3]
    return b"\x28\xb5\x2f\xfd" + bytes([0x00, 0x00]) + block + bytes([byte])


def jsonl_seeds():
    write("jsonl", "corpus.jsonl", CORPUS)
    write("jsonl", "corpus.jsonl.gz", gzip.compress(CORPUS.encode(), mtime=0))
    one = b'{"text": "zstd frame one"}\n'
    two = b'{"text": "and two"}\n'
    write("jsonl", "two-frames.jsonl.zst", zstd_raw_frame(one) + zstd_raw_frame(two))
    write("jsonl", "rle.jsonl.zst",
          zstd_raw_frame(b'{"text": "') + zstd_rle_frame(ord("a"), 200) + zstd_raw_frame(b'"}\n'))
    write("jsonl", "plain.txt", "A whole document.\nSecond line, no JSON.\n")
    write("jsonl", "step-log.jsonl",
          '{"step":0,"loss":2.5,"lr_mult":0.1}\n{"step":1,"loss":1e400}\n')


if __name__ == "__main__":
    copy_repo_seeds()
    config_seeds()
    safetensors_seeds()
    gguf_seeds()
    recipe_seeds()
    manifest_seeds()
    jsonl_seeds()
    for d in sorted(SEEDS.iterdir()):
        files = sorted(d.iterdir())
        print(f"{d.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")
