"""Write a course GPT model as a GPT-2 checkpoint in the real published formats.

The course cannot ship OpenAI's weights, but it can check its loaders against files
laid out exactly like them: ``write_openai_tf_checkpoint`` writes OpenAI's TensorFlow
checkpoint folder (same file names, variable names, shapes and dtype), and
``write_hf_safetensors`` writes Hugging Face's ``model.safetensors`` (same tensor names,
Conv1D layouts). Both read a course ``GPTModel`` (or any object with its attributes:
tok_emb, pos_emb, trf_blocks[i].att.W_query/W_key/W_value/out_proj, .ff.layers[0]/[2],
.norm1/.norm2 with scale and shift, final_norm, out_head).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

OPENAI_CKPT_NAME = "model.ckpt"


def _np(t: torch.Tensor) -> np.ndarray:
    """A float32 NumPy copy of a tensor."""
    return t.detach().to("cpu", torch.float32).numpy().copy()


def _bias(linear: torch.nn.Linear) -> np.ndarray:
    """A linear layer's bias, or zeros where it has none (GPT-2 always has one)."""
    if linear.bias is None:
        return np.zeros(linear.out_features, dtype=np.float32)
    return _np(linear.bias)


def _conv1d_weight(*linears: torch.nn.Linear) -> np.ndarray:
    """The (in, out) weight of a Conv1D equal to the given nn.Linear layers side by side."""
    return np.concatenate([_np(lin.weight).T for lin in linears], axis=1)


def _conv1d_bias(*linears: torch.nn.Linear) -> np.ndarray:
    """The bias of a Conv1D equal to the given nn.Linear layers side by side."""
    return np.concatenate([_bias(lin) for lin in linears])


def gpt2_tensors(model: Any) -> dict[str, np.ndarray]:
    """The model's weights under GPT-2's own names (dots, as in Hugging Face) and layouts."""
    if not torch.equal(model.out_head.weight, model.tok_emb.weight):
        raise ValueError(
            "GPT-2's files store no output head: it reuses the token embeddings (weight tying). "
            "Tie them first: model.out_head.weight = model.tok_emb.weight"
        )
    out = {"wte": _np(model.tok_emb.weight), "wpe": _np(model.pos_emb.weight)}
    for i, block in enumerate(model.trf_blocks):
        att, ff = block.att, block.ff
        p = f"h{i}"
        out[f"{p}.ln_1.g"] = _np(block.norm1.scale)
        out[f"{p}.ln_1.b"] = _np(block.norm1.shift)
        out[f"{p}.attn.c_attn.w"] = _conv1d_weight(att.W_query, att.W_key, att.W_value)
        out[f"{p}.attn.c_attn.b"] = _conv1d_bias(att.W_query, att.W_key, att.W_value)
        out[f"{p}.attn.c_proj.w"] = _conv1d_weight(att.out_proj)
        out[f"{p}.attn.c_proj.b"] = _conv1d_bias(att.out_proj)
        out[f"{p}.ln_2.g"] = _np(block.norm2.scale)
        out[f"{p}.ln_2.b"] = _np(block.norm2.shift)
        out[f"{p}.mlp.c_fc.w"] = _conv1d_weight(ff.layers[0])
        out[f"{p}.mlp.c_fc.b"] = _conv1d_bias(ff.layers[0])
        out[f"{p}.mlp.c_proj.w"] = _conv1d_weight(ff.layers[2])
        out[f"{p}.mlp.c_proj.b"] = _conv1d_bias(ff.layers[2])
    out["ln_f.g"] = _np(model.final_norm.scale)
    out["ln_f.b"] = _np(model.final_norm.shift)
    return out


def openai_hparams(model: Any) -> dict[str, int]:
    """The model's ``hparams.json`` contents, in OpenAI's keys."""
    vocab, emb = model.tok_emb.weight.shape
    return {
        "n_vocab": int(vocab),
        "n_ctx": int(model.pos_emb.weight.shape[0]),
        "n_embd": int(emb),
        "n_head": int(model.trf_blocks[0].att.num_heads),
        "n_layer": len(model.trf_blocks),
    }


def openai_variables(model: Any) -> dict[str, np.ndarray]:
    """The model's weights under OpenAI's TensorFlow variable names and shapes."""
    out = {}
    for name, value in gpt2_tensors(model).items():
        if name.endswith(".w"):  # OpenAI's Conv1D kernels carry a leading axis of size 1
            value = value[None]  # (1, in, out)
        out["model/" + name.replace(".", "/")] = value  # h3.attn.c_attn.w -> model/h3/attn/c_attn/w
    return out


def write_openai_tf_checkpoint(model: Any, out_dir: str | Path) -> Path:
    """Write ``model`` as OpenAI's GPT-2 TensorFlow checkpoint folder; return the folder."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variables = openai_variables(model)
    graph = tf.Graph()
    with graph.as_default():
        tf_vars = {}
        for name, value in variables.items():
            # Zeros first, filled in below: constants would copy every weight into the .meta graph.
            tf_vars[name] = tf.compat.v1.get_variable(
                name, shape=value.shape, dtype=tf.float32, initializer=tf.compat.v1.zeros_initializer()
            )
        feeds = {name: tf.compat.v1.placeholder(tf.float32, value.shape) for name, value in variables.items()}
        fill = tf.group(*[tf_vars[n].assign(feeds[n]) for n in variables])
        saver = tf.compat.v1.train.Saver(var_list=tf_vars, save_relative_paths=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(fill, feed_dict={feeds[n]: v for n, v in variables.items()})
            saver.save(sess, str(out / OPENAI_CKPT_NAME), write_meta_graph=True, write_state=True)
    (out / "hparams.json").write_text(json.dumps(openai_hparams(model), indent=2), encoding="utf-8")
    return out


def hf_state(model: Any, with_prefix: bool = False, with_buffers: bool = False) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face's GPT-2 names (Conv1D weights as (in, out))."""
    prefix = "transformer." if with_prefix else ""
    suffix = {"g": "weight", "w": "weight", "b": "bias"}
    out = {}
    for name, value in gpt2_tensors(model).items():
        parts = name.split(".")  # e.g. ["h3", "attn", "c_attn", "w"]
        if parts[0] in ("wte", "wpe"):
            parts.append("weight")
        else:
            parts[-1] = suffix[parts[-1]]
        if parts[0][0] == "h" and parts[0][1:].isdigit():
            parts[:1] = ["h", parts[0][1:]]  # h3 -> h.3
        out[prefix + ".".join(parts)] = torch.from_numpy(value).contiguous()
    if with_buffers:  # older files also hold each block's causal mask and masking constant
        n_ctx = openai_hparams(model)["n_ctx"]
        mask = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)).view(1, 1, n_ctx, n_ctx)
        for i in range(len(model.trf_blocks)):
            out[f"{prefix}h.{i}.attn.bias"] = mask.clone()
            out[f"{prefix}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return out


def write_hf_safetensors(
    model: Any, path: str | Path, with_prefix: bool = False, with_buffers: bool = False
) -> Path:
    """Write ``model`` as Hugging Face's GPT-2 ``model.safetensors``; return the file's path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(hf_state(model, with_prefix, with_buffers), str(path), metadata={"format": "pt"})
    return path
