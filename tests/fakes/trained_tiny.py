"""A tiny Phi-3 trained for a few seconds on the evaluation text: a real local checkpoint whose outputs carry
structure (config.json + fp16 safetensors + its own BPE tokenizer), for quality tests on a CPU.

Random weights give near-uniform next-token distributions, so quantization barely moves them and every quality
number is noise; a model trained on the text predicts it, and quantizing its weights moves its predictions.
Sizes: hidden 128, 2 layers, 4 heads, a 320-token BPE vocabulary; every linear layer's dimensions suit
bitsandbytes' 8-bit and 4-bit layers (8 quantized layers, lm_head kept 16-bit).
"""

from __future__ import annotations

import time
from pathlib import Path

VOCAB_SIZE = 320
SIZES = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}


def build_tokenizer(text: str):  # -> transformers.PreTrainedTokenizerFast
    """A BPE tokenizer trained on ``text`` that puts a BOS token before every text, saved as an HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator([text], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def train_tiny_phi3(out: Path, seconds: float = 120.0, steps: int = 200, seed: int = 0) -> dict:
    """Train the tiny Phi-3 on the shipped evaluation text for at most ``steps`` steps or ``seconds``, and save
    it (float16) with its tokenizer under ``out``; returns what was done (steps, seconds, final loss in nats)."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    from bench.config.eval_text import load_eval_text
    from bench.config.models import checkpoint_json

    text = load_eval_text().text
    tokenizer = build_tokenizer(text)
    data = dict(checkpoint_json("microsoft/Phi-3-mini-4k-instruct"))
    data.update(SIZES, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=2)
    config = Phi3Config.from_dict(data)
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config).float().train()
    ids = torch.tensor(tokenizer(text)["input_ids"])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    window, batch = 64, 8
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared small CPU: one thread is several times faster than oversubscribed ones
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    done, loss = 0, float("nan")
    while done < steps and time.perf_counter() - t0 < seconds:
        starts = torch.randint(0, len(ids) - window - 1, (batch,), generator=gen)
        x = torch.stack([ids[s : s + window] for s in starts])
        out_ = model(input_ids=x, labels=x)
        opt.zero_grad()
        out_.loss.backward()
        opt.step()
        loss = float(out_.loss.detach())
        done += 1
    torch.set_num_threads(threads)
    model = model.eval().half()
    model.config.dtype = "float16"
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {"steps": done, "seconds": time.perf_counter() - t0, "loss_nats": loss, "tokens": len(ids)}
