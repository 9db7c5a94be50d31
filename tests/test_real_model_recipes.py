"""The real-model recipes (examples/real) run as written on models of the same architecture and chat format
built locally and tiny: Qwen2 with ChatML, Llama with Llama 3's header template; conversational data, so the
chat template frames every prompt and the completion boundary must be exact."""

import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.config.examples import EXAMPLES_DIR
from prefalign.data.tokenize import CompletionTokenizer

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3 = ("<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
FAMILIES = {
    "qwen2.5-0.5b-instruct-dpo": (Qwen2Config, Qwen2ForCausalLM, CHATML,
                                  dict(eos_token="<|im_end|>", pad_token="<|endoftext|>"),
                                  ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]),
    "llama-3.1-8b-instruct-qlora-dpo": (LlamaConfig, LlamaForCausalLM, LLAMA3,
                                        dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                             pad_token="<|finetune_right_pad_id|>"),
                                        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                         "<|eot_id|>", "<|finetune_right_pad_id|>"]),
    "llama-3.1-8b-instruct-lora-dpo": (LlamaConfig, LlamaForCausalLM, LLAMA3,
                                       dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                            pad_token="<|finetune_right_pad_id|>"),
                                       ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                                        "<|finetune_right_pad_id|>"]),
}
TEXTS = ["review the red lamp .", "the lamp is great .", "the lamp is awful .", "what is 2 plus 3 ?",
         "the answer is 5 .", "the answer is 7 .", "list 2 fruits .", "apple , pear .", "cat , dog ."]


def conversational_rows() -> list[dict]:
    rows = []
    for prompt, chosen, rejected in zip(TEXTS[::3], TEXTS[1::3], TEXTS[2::3]):
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows * 3


def tiny_family_model(name: str, path):
    config_cls, model_cls, template, special, added = FAMILIES[name]
    core = Tokenizer(models.BPE(unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(TEXTS * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=added,
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **special)
    tokenizer.chat_template = template
    torch.manual_seed(0)
    config = config_cls(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                        bos_token_id=tokenizer.bos_token_id)
    model_cls(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return tokenizer


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_real_model_recipe_trains_a_tiny_model_of_its_family_through_its_chat_template(name, tmp_path):
    tokenizer = tiny_family_model(name, tmp_path / "model")
    data = tmp_path / "conversations.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in conversational_rows()))
    out = tmp_path / "run"
    args = ["train", "-c", str(EXAMPLES_DIR / "real" / f"{name}.yaml"), f"model.name_or_path={tmp_path / 'model'}",
            f"data.train={data}", "data.split=train", "data.eval_fraction=0", f"trainer.output_dir={out}",
            "trainer.max_steps=2", "trainer.batch_size=4", "trainer.micro_batch_size=2", "trainer.epochs=1",
            "trainer.progress=false"]
    if "qlora" in name and not torch.cuda.is_available():
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code != 0 and "needs a CUDA GPU" in refused.output and "Traceback" not in refused.output
        args.append("model.quantization=null")  # the rest of the recipe as LoRA on the full-precision base
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "format conversational" in result.output and "0 truncated" in result.output
    # The templated prompt is an exact prefix of prompt + answer: no boundary fallback, and the completion is
    # the answer and the end-of-turn token alone.
    encoder = CompletionTokenizer(tokenizer, 1024)
    row = conversational_rows()[0]
    encoded = encoder.encode(row["prompt"], row["chosen"])
    assert encoder.boundary_fallbacks == 0
    assert tokenizer.decode(encoded.completion_ids).strip().startswith("the lamp is great .")
    assert encoded.completion_ids[-1] == tokenizer.eos_token_id
    assert (out / ("adapter" if "lora" in name else "model")).is_dir()
