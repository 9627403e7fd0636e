#!/usr/bin/python3
"""Loads an sbmt checkpoint into the PyTorch model of bench/torch_listops.py through a name map
(h5py + torch, nothing else), evaluates one split of an sbmt dataset without dropout, and prints
{"split", "accuracy", "loss", "rows"} as JSON: an independent check of sbmt's forward pass and of
the checkpoint layout (PyTorch [out, in] weights, SPEC.md section 6).

usage: tests/torch_crosscheck.py CKPT.h5 DATA.h5 SPLIT
"""
import configparser
import importlib.util
import json
import os
import sys

import h5py
import numpy as np
import torch

# sbmt name -> bench/torch_listops.py module path (nn.Sequential indices for ffn and head).
RENAME = [("embed/tokens", "tokens/weight"), ("embed/positions", "positions/weight"),
          ("/ffn/fc1/", "/ffn/0/"), ("/ffn/fc2/", "/ffn/3/"),
          ("head/fc1/", "head/0/"), ("head/fc2/", "head/2/")]


def load_state(path):
    state = {}
    with h5py.File(path, "r") as f:
        assert f.attrs["sbmt_format"] in ("checkpoint", b"checkpoint"), "not an sbmt checkpoint"
        config = f.attrs["config"]
        config = config.decode() if isinstance(config, bytes) else config

        def take(name, obj):
            if isinstance(obj, h5py.Dataset):
                for a, b in RENAME:
                    name = name.replace(a, b)
                state[name.replace("/", ".")] = torch.from_numpy(np.asarray(obj[()]))

        f["model"].visititems(take)
    return state, config


def main():
    ckpt, data, split = sys.argv[1:4]
    state, text = load_state(ckpt)
    cfg = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    cfg.read_string(text)
    m, d = cfg["model"], cfg["data"]
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "torch_listops", os.path.join(here, "..", "bench", "torch_listops.py"))
    tl = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tl)
    args = tl.parse_args([
        "--d-model", m["d_model"], "--d-ff", m["d_ff"], "--heads", m["heads"],
        "--head-dim", m["head_dim"], "--layers", m["layers"], "--vocab", d["vocab_size"],
        "--classes", d["num_classes"], "--seq-len", d["seq_len"], "--pooling", m["pooling"],
        "--attention", m["attention"]])
    model = tl.Classifier(args)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Only non-parameter buffers may be absent; every sbmt tensor must find its place.
    assert not unexpected, f"unmapped sbmt tensors: {unexpected}"
    assert not [k for k in missing if k.endswith("weight") or k.endswith("bias")], missing
    model.eval()
    with h5py.File(data, "r") as f:
        ids = torch.from_numpy(f[split]["input_ids"][()].astype(np.int64))
        labels = torch.from_numpy(f[split]["labels"][()].astype(np.int64))
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids), 64):
            logits = model(ids[i:i + 64])
            loss += torch.nn.functional.cross_entropy(
                logits.double(), labels[i:i + 64], reduction="sum").item()
            correct += (logits.argmax(-1) == labels[i:i + 64]).sum().item()
    print(json.dumps({"split": split, "accuracy": correct / len(ids), "loss": loss / len(ids),
                      "rows": len(ids)}))


if __name__ == "__main__":
    main()
