"""Hostile and careless inputs, each one command: exit code, first line, peak memory and seconds.

    python benchmarks/hostile_inputs.py --json benchmarks/results/hostile_inputs.json

Builds tiny models in a scratch folder (an image model, an EraseDiff erasure of it, a model retrained without
another class, a text model and broken copies of it), then runs every row as its own ``erasediff`` process with one
thread and records what a user sees: the exit code (2 = a refused input, in one line), the first line of output,
the process's peak resident memory (from the kernel's accounting of the child) and its wall time. A row passes when
the exit code is the one wanted and the first line names the problem; nothing may be written where the command
was told to write. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ERASEDIFF = [sys.executable, "-c", "from erasediff.cli import main; main()"]
TINY_TRAIN = ["--steps", "2", "--batch-size", "8", "--block-out-channels", "8,16", "--quiet", "--threads", "1"]


def run(args: list, cwd: Path | None = None) -> dict:
    """One ``erasediff`` process: exit code, first output line, its own peak RSS (MB, from wait4) and seconds."""
    with tempfile.TemporaryFile("w+") as output:
        start = time.perf_counter()
        process = subprocess.Popen([*ERASEDIFF, *map(str, args)], stdout=output, stderr=subprocess.STDOUT, cwd=cwd,
                                   stdin=subprocess.DEVNULL, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        lines = output.read().strip().splitlines()
    return {"exit": process.returncode, "first_line": lines[0] if lines else "", "lines": len(lines),
            "peak_mb": usage.ru_maxrss / 1024, "seconds": seconds}


def setup(root: Path) -> dict[str, Path]:
    """The models and files the rows use."""
    paths = {"root": root}
    for name, extra in (("model", []), ("text", ["--kind", "text"])):
        result = run(["train", *extra, "--out", root / name, *TINY_TRAIN])
        assert result["exit"] == 0, result
        paths[name] = root / name
    result = run(["unlearn", "--model", root / "model", "--forget-class", "0", "--steps", "1", "--batch-size", "4",
                  "--out", root / "erased", "--quiet", "--threads", "1"])
    assert result["exit"] == 0, result
    paths["erased"] = root / "erased"
    result = run(["unlearn", "--model", root / "model", "--method", "retrain", "--param", "steps=2",
                  "--forget-class", "3", "--out", root / "retrained3", "--quiet", "--threads", "1"])
    assert result["exit"] == 0, result
    paths["retrained3"] = root / "retrained3"
    for name in ("text-truncated", "text-no-tokenizer", "text-long"):
        shutil.copytree(root / "text", root / name)
        paths[name] = root / name
    weights = next((root / "text-truncated" / "text_encoder").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    shutil.rmtree(root / "text-no-tokenizer" / "tokenizer")
    (root / "text-no-tokenizer" / "erasediff.json").unlink()
    config = root / "text-long" / "tokenizer" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 10**30}))
    (root / "text-long" / "erasediff.json").unlink()
    subprocess.run([sys.executable, "-c", (
        "import sys, torch; from diffusion.loading import load_model; m = load_model(sys.argv[1]);"
        "next(m.unet.text_encoder.parameters()).data.fill_(float('nan')); m.save(sys.argv[2])"),
        root / "text", root / "text-nan"], check=True)
    paths["text-nan"] = root / "text-nan"
    for name, edit in (("huge-channels", {"block_out_channels": [4096, 8192, 8192, 8192], "layers_per_block": 64}),
                       ("huge-classes", {"num_class_embeds": 10**9})):
        shutil.copytree(root / "model", root / name)
        paths[name] = root / name
        unet = root / name / "unet" / "config.json"
        unet.write_text(json.dumps({**json.loads(unet.read_text()), **edit}))
    shutil.copytree(root / "model", root / "plain")  # as plain diffusers saves it: no erasediff.json
    (root / "plain" / "erasediff.json").unlink()
    paths["plain"] = root / "plain"
    shutil.copytree(root / "model", root / "huge-timesteps")
    paths["huge-timesteps"] = root / "huge-timesteps"
    scheduler = root / "huge-timesteps" / "scheduler" / "scheduler_config.json"
    scheduler.write_text(json.dumps({**json.loads(scheduler.read_text()), "num_train_timesteps": 10**8}))
    os.mkfifo(root / "fifo.txt")
    words = root / "words"  # a folder whose captions hold 10,000 distinct words
    digits = words / "digit0"
    digits.mkdir(parents=True)
    from PIL import Image

    rows = []
    for i in range(20):
        Image.new("L", (8, 8), i * 10).save(digits / f"{i}.png")
        text = " ".join(f"w{''.join(chr(97 + int(d)) for d in str(i * 500 + k))}" for k in range(500))
        rows.append(json.dumps({"file_name": f"digit0/{i}.png", "text": text}))
    (words / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    for name, text in (("octal.yaml", "forget_classes: [012]\n"), ("twice.yaml", "seed: 1\nseed: 2\n"),
                       ("fd.yaml", "thresholds: {retained_fd_ratio: 1e308}\n"),
                       ("margin.yaml", "thresholds: {extraction_margin: 2147483647}\n"),
                       ("members.txt", "digit0/0.png\n")):
        (root / name).write_text(text)
    return paths


def rows(p: dict[str, Path]) -> list[tuple[str, list, int, str, Path | None]]:
    """(row, args, wanted exit code, fragment of the first line, a path that must not be written)."""
    root, out = p["root"], p["root"] / "out"
    audit = ["audit", "--model", p["model"], "--forget-class", "0", "--quiet", "--threads", "1", "--out", out]
    text = ["unlearn", "--model", p["text"], "--anchor", "", "--steps", "1", "--quiet", "--threads", "1", "--out", out]
    return [
        ("unlearned given as its own reference", [*audit, "--unlearned", p["erased"], "--retrained", p["erased"]], 2,
         "has the same weights as the unlearned model", out),
        ("original given as a reference", [*audit, "--unlearned", p["erased"], "--retrained", p["model"]], 2,
         "has the same weights as the original model", out),
        ("fine-tuned model given as a reference", [*audit, "--unlearned", p["model"], "--retrained", p["erased"]], 2,
         "records that it was made by 'erasediff'", out),
        ("retrained for another forget set", [*audit, "--unlearned", p["erased"], "--retrained", p["retrained3"]], 2,
         "was retrained without class 3", out),
        ("concept prompt longer than the tokenizer", [*text, "--forget-concept", "please erase every three"], 2,
         "would be cut off", out),
        ("concept prompt with unknown characters", [*text, "--forget-concept", "three <b>"], 2,
         "has characters this model's tokenizer does not know", out),
        ("text model without a tokenizer", [*text[:2], p["text-no-tokenizer"], *text[3:], "--forget-concept", "three"],
         2, "its special tokens only", out),
        ("tokenizer asking for an absurd length", [*text[:2], p["text-long"], *text[3:], "--forget-concept", "three"],
         2, "has a tokenizer length of", out),
        ("text encoder safetensors truncated", [*text[:2], p["text-truncated"], *text[3:], "--forget-concept", "three"],
         2, "could not load text-to-image model", out),
        ("text model with NaN weights", [*text[:2], p["text-nan"], *text[3:], "--forget-concept", "three"], 2,
         "non-finite weights in text_encoder.", out),
        ("caption file of 10,000 distinct words", ["train", "--kind", "text", "--data", p["root"] / "words", "--out",
                                                   out, *TINY_TRAIN], 2, "distinct words", out),
        ("--param name=x", ["unlearn", "--model", p["model"], "--forget-class", "0", "--param", "name=x", "--out", out],
         2, "'name' is not a parameter", out),
        ("--param self=1", ["unlearn", "--model", p["model"], "--forget-class", "0", "--param", "self=1", "--out",
                            out], 2, "'self' is not a parameter", out),
        ("--param steps=010", ["unlearn", "--model", p["model"], "--forget-class", "0", "--param", "steps=010",
                               "--out", out], 2, "read differently", out),
        ("train --out . --force", ["train", "--out", ".", "--force", *TINY_TRAIN], 2, "is the current folder", None),
        ("train --out .. --force", ["train", "--out", "..", "--force", *TINY_TRAIN], 2, "holds it", None),
        ("--threads 1000", ["train", "--threads", "1000", "--out", out, "--steps", "2"], 2, "CPU core", out),
        ("config asking for huge channels", ["attack", "--model", p["huge-channels"], "--out", out], 2,
         "ask for about", out),
        ("config asking for 10^9 classes", ["attack", "--model", p["huge-classes"], "--out", out], 2, "ask for about",
         out),
        ("config asking for 10^8 timesteps", ["attack", "--model", p["huge-timesteps"], "--out", out], 2,
         "is beyond 100000", out),
        ("--image-size 100000", ["train", "--data", p["root"] / "words", "--image-size", "100000", "--out", out,
                                 *TINY_TRAIN], 2, "from 1 to 2048", out),
        ("prompts file /dev/zero", [*text, "--forget-prompts", "/dev/zero"], 2, "is not a regular file", out),
        ("prompts file a FIFO", [*text, "--forget-prompts", p["root"] / "fifo.txt"], 2, "is not a regular file", out),
        ("forget_classes: [012]", ["audit", "--config", root / "octal.yaml", "--out", out], 2, "read differently",
         out),
        ("a YAML key given twice", ["audit", "--config", root / "twice.yaml", "--out", out], 2, "twice", out),
        ("retained_fd_ratio: 1e308", ["audit", "--config", root / "fd.yaml", "--out", out], 2, "can never fail", out),
        ("extraction_margin: 2147483647", ["audit", "--config", root / "margin.yaml", "--out", out], 2,
         "can never fail", out),
        ("hub model, no record, no members", ["audit", "--model", "hf://CompVis/stable-diffusion-v1-4", "--data",
                                              root / "words", "--forget-concept", "digit 0", "--out", out], 2,
         "records no member split", out),
        ("plain diffusers model, no members", ["audit", "--model", p["plain"], "--out", out], 2,
         "records no member split", out),
        ("members declared without heldout", ["unlearn", "--model", p["model"], "--forget-class", "0", "--members",
                                              root / "members.txt", "--out", out], 2,
         "'members' is declared without 'heldout'", out),
        ("forget files in the bundled digits", ["audit", "--forget-files", root / "members.txt", "--out", out], 2,
         "the data is the bundled digits", out),
        ("a LoRA without a base", ["train", "--lora-rank", "4", "--out", out, *TINY_TRAIN], 2,
         "a LoRA adapts a base model", out),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("hostile_inputs.json"))
    args = parser.parse_args()
    os.environ["ERASEDIFF_CACHE"] = tempfile.mkdtemp(prefix="erasediff-hostile-cache-")
    with tempfile.TemporaryDirectory(prefix="erasediff-hostile-") as scratch:
        root = Path(scratch) / "work"
        (root / "here").mkdir(parents=True)
        paths = setup(root)
        table = []
        for name, command, wanted, fragment, forbidden in rows(paths):
            result = run(command, cwd=root / "here")
            ok = (result["exit"] == wanted and fragment in result["first_line"] and result["lines"] == 1
                  and (forbidden is None or not forbidden.exists()))
            table.append({"row": name, "ok": ok, **result})
            print(f"{'ok ' if ok else 'BAD'} {name:40s} exit {result['exit']}  {result['peak_mb']:5.0f} MB  "
                  f"{result['seconds']:5.1f} s  {result['first_line'][:110]}", flush=True)
    print(f"{sum(r['ok'] for r in table)} of {len(table)} rows as wanted")
    args.json.write_text(json.dumps({"rows": table}, indent=2))


if __name__ == "__main__":
    main()
