"""Chapter 5.5: loading GPT-2's published weights into the course's GPTModel.

OpenAI's real files cannot be downloaded here, so the chapter's writers
(``write_openai_tf_checkpoint``, ``write_hf_safetensors``) write a random course model in exactly
their formats (OpenAI's TensorFlow checkpoint, Hugging Face's safetensors); every loader must read
it back into a fresh model with identical tensors and bit-identical logits. Readers and writers
share one mapping, ``GPT2_TO_COURSE``; ``test_ch05_gpt2_parity.py`` checks that mapping against
Hugging Face's independent GPT-2.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from gpt_from_scratch.ch04 import GPTModel, gpt2_config
from gpt_from_scratch.ch05 import (
    SAFETENSORS_DTYPES,
    GPTModelFast,
    assign,
    gpt2_config_from_hparams,
    gpt2_names,
    gpt2_to_course_state,
    load_gpt2_model_lowmem,
    load_gpt2_params_from_tf_ckpt,
    load_hf_weights_into_gpt,
    load_weights_into_gpt,
    openai_variable_name,
    read_safetensors,
    write_hf_safetensors,
    write_openai_tf_checkpoint,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="module")
def small_cfg(tiny_cfg):
    """The suite's tiny configuration, deeper and with GPT-2's query/key/value biases."""
    return tiny_cfg(context_length=24, n_layers=3, qkv_bias=True)


OPENAI_FILES = {
    "checkpoint",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
}


def random_gpt(seed: int, **cfg):
    """A course GPTModel in eval mode with every parameter random (no ones/zeros left to hide a swap)."""
    torch.manual_seed(seed)
    model = GPTModel(gpt2_config("124M", **cfg)).eval()
    model.out_head.weight = model.tok_emb.weight  # tied, as in GPT-2 (its files store no head)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def logits(model, seed: int = 1) -> torch.Tensor:
    """The model's logits for a fixed random batch of two full-length inputs."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.cfg["vocab_size"], (2, model.cfg["context_length"]), generator=g)
    with torch.no_grad():
        return model(ids)


@pytest.fixture(scope="module")
def tiny(small_cfg):
    return random_gpt(0, **small_cfg)


def openai_names_and_shapes(n_layers: int, vocab: int, ctx: int, emb: int) -> dict[str, list[int]]:
    """OpenAI's GPT-2 variable names and shapes, written out independently of the writer."""
    names = {"model/wte": [vocab, emb], "model/wpe": [ctx, emb], "model/ln_f/g": [emb], "model/ln_f/b": [emb]}
    for i in range(n_layers):
        h = f"model/h{i}"
        names.update(
            {
                f"{h}/ln_1/g": [emb],
                f"{h}/ln_1/b": [emb],
                f"{h}/ln_2/g": [emb],
                f"{h}/ln_2/b": [emb],
                f"{h}/attn/c_attn/w": [1, emb, 3 * emb],
                f"{h}/attn/c_attn/b": [3 * emb],
                f"{h}/attn/c_proj/w": [1, emb, emb],
                f"{h}/attn/c_proj/b": [emb],
                f"{h}/mlp/c_fc/w": [1, emb, 4 * emb],
                f"{h}/mlp/c_fc/b": [4 * emb],
                f"{h}/mlp/c_proj/w": [1, 4 * emb, emb],
                f"{h}/mlp/c_proj/b": [emb],
            }
        )
    return names


# ------------------------------------------------------------------ OpenAI's TensorFlow checkpoint
def test_tf_writer_matches_openais_layout(tiny, tmp_path):
    import tensorflow as tf

    folder = write_openai_tf_checkpoint(tiny, tmp_path / "ckpt")
    assert {p.name for p in folder.iterdir()} == OPENAI_FILES
    hparams = json.loads((folder / "hparams.json").read_text())
    assert hparams == {"n_vocab": 97, "n_ctx": 24, "n_embd": 32, "n_head": 4, "n_layer": 3}
    assert tf.train.latest_checkpoint(str(folder)) == str(folder / "model.ckpt")  # relative, movable
    found = dict(tf.train.list_variables(str(folder / "model.ckpt")))
    assert found == openai_names_and_shapes(3, 97, 24, 32)
    assert tf.train.load_variable(str(folder / "model.ckpt"), "model/wte").dtype.name == "float32"


def test_tf_round_trip_gives_identical_logits(small_cfg, tiny, tmp_path):
    folder = write_openai_tf_checkpoint(tiny, tmp_path / "ckpt")
    settings, params = load_gpt2_params_from_tf_ckpt(folder)
    assert settings == {"n_vocab": 97, "n_ctx": 24, "n_embd": 32, "n_head": 4, "n_layer": 3}
    assert len(params["blocks"]) == 3
    assert params["blocks"][0]["attn"]["c_attn"]["w"].shape == (32, 96)  # leading axis of 1 dropped
    cfg = gpt2_config_from_hparams(settings, drop_rate=0.0)
    assert cfg == gpt2_config("124M", **small_cfg)
    fresh = random_gpt(99, **small_cfg)
    assert not torch.equal(logits(fresh), logits(tiny))
    load_weights_into_gpt(fresh, params)
    assert torch.equal(logits(fresh), logits(tiny))
    assert torch.equal(fresh.out_head.weight, fresh.tok_emb.weight)  # weight tying: out_head = wte
    assert all(p.is_contiguous() for p in fresh.parameters())  # stored as a new layer stores them


@pytest.mark.slow
def test_tf_round_trip_at_124m(tmp_path):
    start = time.perf_counter()
    model = random_gpt(0, qkv_bias=True, drop_rate=0.0)
    folder = write_openai_tf_checkpoint(model, tmp_path / "124M")
    settings, params = load_gpt2_params_from_tf_ckpt(folder)
    assert settings == {"n_vocab": 50257, "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12}
    del folder
    fresh = GPTModel(gpt2_config_from_hparams(settings, drop_rate=0.0)).eval()
    load_weights_into_gpt(fresh, params)
    ids = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    print(f"124M TensorFlow round trip: {time.perf_counter() - start:.1f} s")


# ------------------------------------------------------------------ Hugging Face safetensors
@pytest.mark.parametrize("with_prefix, with_buffers", [(False, False), (True, True)])
def test_safetensors_round_trip_gives_identical_logits(small_cfg, tiny, tmp_path, with_prefix, with_buffers):
    path = write_hf_safetensors(tiny, tmp_path / "model.safetensors", with_prefix, with_buffers)
    state = read_safetensors(path)
    prefix = "transformer." if with_prefix else ""
    assert state[f"{prefix}h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)
    assert state[f"{prefix}wte.weight"].dtype == torch.float32
    fresh = random_gpt(99, **small_cfg)
    load_hf_weights_into_gpt(fresh, state)
    assert torch.equal(logits(fresh), logits(tiny))
    assert all(p.is_contiguous() for p in fresh.parameters())  # Conv1D's (in, out) transposed, then copied


@pytest.mark.slow
def test_safetensors_round_trip_at_124m(tmp_path):
    model = random_gpt(0, qkv_bias=True, drop_rate=0.0)
    path = write_hf_safetensors(model, tmp_path / "model.safetensors")
    state = read_safetensors(path)
    assert len(state) == 2 + 12 * 12 + 2
    fresh = GPTModel(gpt2_config("124M", qkv_bias=True, drop_rate=0.0)).eval()
    load_hf_weights_into_gpt(fresh, state)
    ids = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))


def test_writers_refuse_an_untied_head(small_cfg, tmp_path):
    model = random_gpt(0, **small_cfg)
    model.out_head.weight = torch.nn.Parameter(model.tok_emb.weight.detach() + 1)
    for write in (write_openai_tf_checkpoint, write_hf_safetensors):
        with pytest.raises(ValueError, match="weight tying"):
            write(model, tmp_path / "x")


def test_lm_head_is_taken_when_present(small_cfg, tiny, tmp_path):
    state = read_safetensors(write_hf_safetensors(tiny, tmp_path / "m.safetensors"))
    state["lm_head.weight"] = state["wte.weight"] * 2  # untied, so we can see which one is used
    fresh = random_gpt(99, **small_cfg)
    load_hf_weights_into_gpt(fresh, state)
    assert torch.equal(fresh.out_head.weight, state["lm_head.weight"])
    assert torch.equal(fresh.tok_emb.weight, state["wte.weight"])


# ------------------------------------------------------------------ bad input: clear errors
def test_unknown_model_size_lists_the_valid_ones():
    from shared.data import fetch_gpt2_checkpoint, fetch_gpt2_safetensors

    for call in (gpt2_config, fetch_gpt2_checkpoint, fetch_gpt2_safetensors):
        with pytest.raises(ValueError, match="125M") as err:
            call("125M")
        assert all(size in str(err.value) for size in ("124M", "355M", "774M", "1558M"))


def test_shape_mismatch_names_the_tensor(small_cfg, tiny, tmp_path):
    with pytest.raises(ValueError, match=r"h0/mlp/c_fc/w.*\(3, 4\).*\(4, 3\)"):
        assign(torch.zeros(3, 4), torch.zeros(4, 3), "h0/mlp/c_fc/w")
    _, params = load_gpt2_params_from_tf_ckpt(write_openai_tf_checkpoint(tiny, tmp_path / "c"))
    shorter = random_gpt(1, **{**small_cfg, "context_length": 16})  # wpe has 24 rows in the file
    with pytest.raises(ValueError, match=r"wpe.*\(16, 32\).*\(24, 32\)"):
        load_weights_into_gpt(shorter, params)
    state = read_safetensors(write_hf_safetensors(tiny, tmp_path / "m.safetensors"))
    state["h.1.mlp.c_fc.weight"] = state["h.1.mlp.c_fc.weight"].T
    with pytest.raises(
        ValueError, match=r"h\.1\.mlp\.c_fc\.weight \(our trf_blocks\.1\.ff\.layers\.0\.weight\)"
    ):
        load_hf_weights_into_gpt(random_gpt(1, **small_cfg), state)


def test_wrong_architecture_is_refused(small_cfg, tiny, tmp_path):
    _, params = load_gpt2_params_from_tf_ckpt(write_openai_tf_checkpoint(tiny, tmp_path / "c"))
    with pytest.raises(ValueError, match="qkv_bias=True"):
        load_weights_into_gpt(random_gpt(1, **{**small_cfg, "qkv_bias": False}), params)
    with pytest.raises(ValueError, match="3 blocks"):
        load_weights_into_gpt(random_gpt(1, **{**small_cfg, "n_layers": 2}), params)


@pytest.mark.parametrize("missing", ["hparams.json", "model.ckpt.index", "model.ckpt.data-00000-of-00001"])
def test_missing_checkpoint_file_is_named(tiny, tmp_path, missing):
    folder = write_openai_tf_checkpoint(tiny, tmp_path / "c")
    (folder / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        load_gpt2_params_from_tf_ckpt(folder)


def test_missing_safetensors_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        read_safetensors(tmp_path / "nowhere.safetensors")


def test_unknown_or_missing_hf_keys_are_named(small_cfg, tiny, tmp_path):
    state = read_safetensors(write_hf_safetensors(tiny, tmp_path / "m.safetensors"))
    fresh = random_gpt(1, **small_cfg)
    with pytest.raises(KeyError, match=r"unknown \[h\.0\.attn\.c_attn\.scale\]"):
        load_hf_weights_into_gpt(fresh, {**state, "h.0.attn.c_attn.scale": torch.ones(96)})
    del state["ln_f.bias"]
    with pytest.raises(KeyError, match=r"missing \[ln_f\.bias\]"):
        load_hf_weights_into_gpt(fresh, state)


# ------------------------------------------------------------------ the one mapping
@pytest.mark.parametrize("model_class", [GPTModel, GPTModelFast])
def test_mapping_names_every_parameter_once(small_cfg, model_class):
    """GPT2_TO_COURSE names each of our parameters once; the output head is GPT-2's tied wte."""
    names = gpt2_names(small_cfg["n_layers"])
    ours = [name for targets, _ in names.values() for name in targets]
    assert len(ours) == len(set(ours))
    expected = set(model_class(gpt2_config("124M", **small_cfg)).state_dict()) - {"out_head.weight"}
    assert set(ours) == {name for name in expected if not name.endswith(".mask")}  # masks are not weights
    transposed = {name for name, (_, t) in names.items() if t}
    conv1d = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    assert transposed == {f"h.{i}.{layer}.weight" for i in range(3) for layer in conv1d}


def test_openai_names_follow_from_the_mapping():
    """OpenAI's variable names, derived from the mapping, are exactly the independently written list."""
    derived = {openai_variable_name(name) for name in gpt2_names(3)}
    assert derived == set(openai_names_and_shapes(3, 97, 24, 32))
    assert openai_variable_name("h.11.ln_2.bias") == "model/h11/ln_2/b"


def every_reader(source, tmp_path, cfg) -> dict[str, torch.nn.Module]:
    """``source`` written by both writers, read back by every loader of the course."""
    tf_dir = write_openai_tf_checkpoint(source, tmp_path / "tf")
    plain = write_hf_safetensors(source, tmp_path / "plain" / "model.safetensors")
    real = write_hf_safetensors(
        source, tmp_path / "real" / "model.safetensors", with_prefix=True, with_buffers=True
    )
    loaded = {}
    settings, params = load_gpt2_params_from_tf_ckpt(tf_dir)
    loaded["tf: load_weights_into_gpt"] = GPTModel(gpt2_config_from_hparams(settings, drop_rate=0.0))
    load_weights_into_gpt(loaded["tf: load_weights_into_gpt"], params)
    for name, path in (("plain", plain), ("prefix and buffers", real)):
        loaded[f"hf {name}: load_hf_weights_into_gpt"] = GPTModel(cfg)
        load_hf_weights_into_gpt(loaded[f"hf {name}: load_hf_weights_into_gpt"], read_safetensors(path))
        for model_class in (GPTModel, GPTModelFast):
            loaded[f"hf {name}: lowmem {model_class.__name__}"] = load_gpt2_model_lowmem(
                path, model_class=model_class, cfg=cfg
            )
    return loaded


def test_every_reader_gets_back_what_the_writers_wrote(small_cfg, tiny, tmp_path):
    cfg = gpt2_config("124M", **small_cfg)
    expected = tiny.state_dict()
    for how, model in every_reader(tiny, tmp_path, cfg).items():
        got = model.state_dict()
        assert got.keys() == expected.keys(), how
        for name, value in expected.items():
            assert torch.equal(got[name], value), f"{how}: {name}"
        if isinstance(model, GPTModelFast):  # SDPA adds in another order: float32 rounding
            torch.testing.assert_close(logits(model.eval()), logits(tiny), atol=1e-5, rtol=1e-4)
        else:
            assert torch.equal(logits(model.eval()), logits(tiny)), how


def test_a_wrong_mapping_entry_in_a_reader_is_caught(small_cfg, tiny, tmp_path, monkeypatch):
    """Written with the right table, read with one entry swapped: the round trip notices."""
    import gpt_from_scratch.ch05 as ch05

    path = write_hf_safetensors(tiny, tmp_path / "model.safetensors")
    wrong = dict(ch05.GPT2_TO_COURSE)
    wrong["h.{i}.ln_1.weight"], wrong["h.{i}.ln_2.weight"] = (
        wrong["h.{i}.ln_2.weight"],
        wrong["h.{i}.ln_1.weight"],
    )
    monkeypatch.setattr(ch05, "GPT2_TO_COURSE", wrong)
    fresh = random_gpt(99, **small_cfg)
    load_hf_weights_into_gpt(fresh, read_safetensors(path))
    assert not torch.equal(fresh.trf_blocks[0].norm1.scale, tiny.trf_blocks[0].norm1.scale)
    assert not torch.equal(logits(fresh), logits(tiny))


def test_mapping_returns_views_not_copies(small_cfg, tiny, tmp_path):
    state = read_safetensors(write_hf_safetensors(tiny, tmp_path / "model.safetensors"))
    ours = gpt2_to_course_state(state, small_cfg["n_layers"])
    c_attn = state["h.0.attn.c_attn.weight"]  # (emb, 3 * emb)
    query = ours["trf_blocks.0.att.W_query.weight"]  # (emb, emb), the first third of the columns, transposed
    assert query.untyped_storage().data_ptr() == c_attn.untyped_storage().data_ptr()
    assert torch.equal(query, c_attn[:, :32].T)
    assert ours["out_head.weight"] is state["wte.weight"]  # GPT-2's files hold no head: tied


def test_benchmark_book_params_come_from_the_mapping(small_cfg, tiny, tmp_path):
    """benchmarks/bench_common.hf_to_book_params: the book's nested layout, built from the one mapping."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import bench_common
    finally:
        sys.path.pop(0)
    state = read_safetensors(write_hf_safetensors(tiny, tmp_path / "model.safetensors"))
    params = bench_common.hf_to_book_params(state, small_cfg["n_layers"])
    assert sorted(params) == ["b", "blocks", "g", "wpe", "wte"]  # the book keeps ln_f's g and b at the top
    assert (params["g"] == state["ln_f.weight"].numpy()).all()
    assert (params["blocks"][2]["attn"]["c_attn"]["w"] == state["h.2.attn.c_attn.weight"].numpy()).all()
    params["ln_f"] = {"g": params.pop("g"), "b": params.pop("b")}  # chapter 5's layout: loads identically
    fresh = random_gpt(99, **small_cfg)
    load_weights_into_gpt(fresh, params)
    assert torch.equal(logits(fresh), logits(tiny))


# ------------------------------------------------------------------ the one safetensors reader
def test_read_safetensors_equals_the_safetensors_package_for_every_dtype(tmp_path):
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(0)
    tensors = {
        "F32": torch.randn(3, 5, generator=g),
        "F16": torch.randn(7, generator=g).half(),
        "BF16": torch.randn(2, 3, 4, generator=g).bfloat16(),
        "BOOL": torch.tril(torch.ones(1, 1, 4, 4, dtype=torch.bool)),
        "I64": torch.arange(-3, 9),
        "scalar": torch.tensor(-1e4),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "all.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    ours, theirs = read_safetensors(path), load_file(str(path))
    assert ours.keys() == theirs.keys() == tensors.keys()
    for name, t in theirs.items():
        assert ours[name].dtype == t.dtype and ours[name].shape == t.shape and torch.equal(ours[name], t), (
            name
        )
    assert {str(t.dtype) for t in tensors.values()} == {str(d) for d in SAFETENSORS_DTYPES.values()}


def test_read_safetensors_refuses_broken_files(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"a": torch.ones(4), "b": torch.ones(2, 2)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(ValueError, match="truncated"):
        read_safetensors(path)
    save_file({"x": torch.ones(2, dtype=torch.float64)}, str(path))
    with pytest.raises(ValueError, match="dtype F64"):
        read_safetensors(path)
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    header["a"]["shape"] = [3]  # 16 bytes of data for 3 float32 numbers
    text = json.dumps(header, separators=(",", ":")).encode().ljust(header_len)  # padded like the original
    path.write_bytes(header_len.to_bytes(8, "little") + text + data[8 + header_len :])
    with pytest.raises(ValueError, match="wrong number of bytes"):
        read_safetensors(path)
