"""Tiny, randomly initialised foundation models for offline tests and demos: LangSAM's
detectors (GroundingDINO, MM-GroundingDINO, OWLv2) and mask models (SAM2, SAM 3's
tracker), and SAM 3 (also with its small text encoder, sam3_lite_text).

The real checkpoints are ~1 GB and live on the Hugging Face hub. These models have the
same architectures and file layout (`save_pretrained` folders with their processors and
tokenizers), ~0.2 M parameters each, and load and run in well under a second on a CPU.
Their boxes and masks are random: they exercise the pipeline, not segmentation quality.

    python -m segray.models.tiny_langsam OUT_DIR   # prints every folder

Then: `--langsam.detector OUT_DIR/grounding-dino --langsam.sam OUT_DIR/sam2
--sam3.weights OUT_DIR/sam3`; `OUT_DIR/owlv2+OUT_DIR/sam3-tracker` is a pairing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

# A word-piece vocabulary just big enough for prompts like "person." / "a person.".
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "person", ".", "a", "photo", "of", "the", "people"]

# GroundingDINO's processor resizes to this; SAM2 works on a square of SAM_SIZE.
DETECTOR_SHORT_EDGE, DETECTOR_LONG_EDGE = 64, 96
SAM_SIZE = 64


def bert_tokenizer() -> Any:
    """GroundingDINO's word-piece tokenizer over TINY_VOCAB, built offline."""
    from transformers import BertTokenizer

    # vocab= (a dict) works offline; vocab_file= silently ignores the file (all [UNK]).
    return BertTokenizer(vocab={word: i for i, word in enumerate(TINY_VOCAB)})


def _save_grounding_dino(out: Path, mm: bool = False) -> None:
    """GroundingDINO, or with `mm` MM-GroundingDINO (the same processor, another model)."""
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
        SwinConfig,
    )

    tokenizer = bert_tokenizer()
    backbone = SwinConfig(
        image_size=DETECTOR_SHORT_EDGE,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    config_class, model_class = ((MMGroundingDinoConfig, MMGroundingDinoForObjectDetection) if mm
                                 else (GroundingDinoConfig, GroundingDinoForObjectDetection))
    config = config_class(
        backbone_config=backbone,
        text_config=text,
        num_queries=16,
        encoder_layers=1,
        decoder_layers=2,  # 1 breaks the two-stage decoder
        d_model=32,  # GroupNorm(32, d_model): a multiple of 32
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
    )
    model = model_class(config).eval()
    image_processor = GroundingDinoImageProcessor(
        size={"shortest_edge": DETECTOR_SHORT_EDGE, "longest_edge": DETECTOR_LONG_EDGE}
    )
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _save_sam2(out: Path) -> None:
    from transformers import (
        Sam2Config,
        Sam2HieraDetConfig,
        Sam2ImageProcessor,
        Sam2MaskDecoderConfig,
        Sam2Model,
        Sam2Processor,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    s = SAM_SIZE
    # A global-attention block must not open a pooling stage: with blocks [1, 1, 2, 1]
    # the stages start at blocks 0, 1, 2, 4, so block 3 is safe.
    hiera = Sam2HieraDetConfig(
        hidden_size=8,
        num_attention_heads=1,
        image_size=[s, s],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[4, 4],
    )
    # The image size, the prompt encoder's image_size and the feature sizes (/4, /8, /16)
    # must agree, or the mask decoder's shapes do not line up.
    vision = Sam2VisionConfig(
        backbone_config=hiera,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
        fpn_hidden_size=32,
    )
    prompt_encoder = Sam2PromptEncoderConfig(hidden_size=32, image_size=s, patch_size=16, mask_input_channels=4)
    mask_decoder = Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    config = Sam2Config(vision_config=vision, prompt_encoder_config=prompt_encoder, mask_decoder_config=mask_decoder)
    model = Sam2Model(config).eval()
    image_processor = Sam2ImageProcessor(size={"height": s, "width": s}, mask_size={"height": s // 4, "width": s // 4})
    processor = Sam2Processor(image_processor=image_processor)
    model.save_pretrained(out)
    processor.save_pretrained(out)


# SAM 3: a ViT of SAM3_PATCH-pixel patches on a SAM3_SIZE square; every head SAM3_WIDTH wide
# (GroupNorm(8, width) in its mask decoder: a multiple of 8). CLIP's byte-level BPE, with
# merges that make each word below one token; other text falls back to single letters.
SAM3_SIZE, SAM3_PATCH, SAM3_WIDTH = 64, 8, 32
OWLV2_SIZE = 64
SAM3_WORDS = ["person", "people", "human", "a", "photo", "of", "the", "visual"]


def clip_tokenizer() -> Any:
    """CLIP's byte-level BPE (SAM 3's, OWLv2's) over SAM3_WORDS, built offline."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges)


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    # Padding (<|endoftext|>) is 0, as OWLv2 reads a query whose first token is 0 as padding.
    vocab = {token: i for i, token in enumerate(["<|endoftext|>", "<|startoftext|>"])}
    for letter in "abcdefghijklmnopqrstuvwxyz.,":
        for token in (letter, letter + "</w>"):
            vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in SAM3_WORDS:
        symbols = [*word[:-1], word[-1] + "</w>"]
        joined = symbols[0]
        for symbol in symbols[1:]:
            if (joined, symbol) not in merges:
                merges.append((joined, symbol))
            joined += symbol
            vocab.setdefault(joined, len(vocab))
    return vocab, merges


def _sam3_vision() -> Any:
    """SAM 3's image encoder (also its tracker's): a ViT, then an FPN."""
    from transformers import Sam3VisionConfig, Sam3ViTConfig

    grid, width = SAM3_SIZE // SAM3_PATCH, SAM3_WIDTH
    # The ViT's global attention is laid out for exactly this input size.
    vit = Sam3ViTConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2,
                        image_size=SAM3_SIZE, patch_size=SAM3_PATCH, window_size=4, global_attn_indexes=[1],
                        pretrain_image_size=SAM3_SIZE)
    return Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=width,
                            backbone_feature_sizes=[[grid * 4] * 2, [grid * 2] * 2, [grid] * 2],
                            scale_factors=[4.0, 2.0, 1.0, 0.5])


def _save_sam3(out: Path, lite: bool = False) -> None:
    """SAM 3, or with `lite` SAM 3 with a small distilled text encoder (sam3_lite_text)."""
    from transformers import (
        CLIPTextConfig,
        Sam3Config,
        Sam3ImageProcessor,
        Sam3LiteTextConfig,
        Sam3LiteTextModel,
        Sam3Model,
        Sam3Processor,
    )

    tokenizer = clip_tokenizer()
    width = SAM3_WIDTH
    text: Any = {"vocab_size": len(tokenizer), "hidden_size": width, "intermediate_size": 2 * width,
                 "projection_dim": width, "num_attention_heads": 2,
                 "max_position_embeddings": 32}  # Sam3Processor pads text to 32 tokens
    if lite:  # its first and last layers are MobileCLIP's RepMixer blocks
        text |= {"num_hidden_layers": 2, "repmixer_kernel_size": 3}
    else:
        text = CLIPTextConfig(**text, num_hidden_layers=1, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    heads = {"hidden_size": width, "num_attention_heads": 2, "intermediate_size": 2 * width, "dropout": 0.0}
    config_class, model_class = (Sam3LiteTextConfig, Sam3LiteTextModel) if lite else (Sam3Config, Sam3Model)
    config = config_class(vision_config=_sam3_vision(), text_config=text,
                          geometry_encoder_config={"num_layers": 1, "roi_size": 2, **heads},
                          detr_encoder_config={"num_layers": 1, **heads},
                          detr_decoder_config={"num_layers": 1, "num_queries": 8, **heads},
                          mask_decoder_config={"hidden_size": width, "num_attention_heads": 2})
    model = model_class(config).eval()
    with torch.no_grad():  # scores near 0.5 rather than all below every threshold: some instances are kept
        model.detr_decoder.presence_head.layer3.bias.fill_(4.0)
    image_processor = Sam3ImageProcessor(size={"height": SAM3_SIZE, "width": SAM3_SIZE},
                                         mask_size={"height": SAM3_SIZE // 2, "width": SAM3_SIZE // 2})
    model.save_pretrained(out)
    Sam3Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def _save_owlv2(out: Path) -> None:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer = clip_tokenizer()
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16,  # Owlv2Processor pads queries to 16 tokens
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": OWLV2_SIZE, "patch_size": 16}
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=16)).eval()
    with torch.no_grad():  # each patch's own box (OWLv2's box bias), not random slivers
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    image_processor = Owlv2ImageProcessor(size={"height": OWLV2_SIZE, "width": OWLV2_SIZE})
    model.save_pretrained(out)
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def _save_sam3_tracker(out: Path) -> None:
    from transformers import (
        Sam3ImageProcessor,
        Sam3TrackerConfig,
        Sam3TrackerMaskDecoderConfig,
        Sam3TrackerModel,
        Sam3TrackerProcessor,
        Sam3TrackerPromptEncoderConfig,
    )

    width = SAM3_WIDTH
    config = Sam3TrackerConfig(
        vision_config=_sam3_vision(),
        prompt_encoder_config=Sam3TrackerPromptEncoderConfig(hidden_size=width, image_size=SAM3_SIZE,
                                                             patch_size=SAM3_PATCH, mask_input_channels=4),
        mask_decoder_config=Sam3TrackerMaskDecoderConfig(hidden_size=width, mlp_dim=2 * width, num_attention_heads=2,
                                                         iou_head_hidden_dim=width))
    model = Sam3TrackerModel(config).eval()
    image_processor = Sam3ImageProcessor(size={"height": SAM3_SIZE, "width": SAM3_SIZE},
                                         mask_size={"height": SAM3_SIZE // 4, "width": SAM3_SIZE // 4})
    model.save_pretrained(out)
    Sam3TrackerProcessor(image_processor=image_processor).save_pretrained(out)


# Every model's folder under the root, and its writer.
WRITERS = {
    "grounding-dino": _save_grounding_dino,
    "mm-grounding-dino": lambda out: _save_grounding_dino(out, mm=True),
    "owlv2": _save_owlv2,
    "sam2": _save_sam2,
    "sam3-tracker": _save_sam3_tracker,
    "sam3": _save_sam3,
    "sam3-lite-text": lambda out: _save_sam3(out, lite=True),
}


def save_tiny_weights(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write every tiny random model (`WRITERS`) under `root`; returns their folders by name."""
    root = Path(root)
    folders = {name: root / name for name in WRITERS}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, write in WRITERS.items():
            write(folders[name])
    return folders


def save_tiny_langsam(root: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write tiny random GroundingDINO and SAM2 folders under `root`; returns (detector, sam)."""
    root = Path(root)
    # A private generator state: the same weights on every call, the caller's RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in ("grounding-dino", "sam2"):
            WRITERS[name](root / name)
    return root / "grounding-dino", root / "sam2"


def main(argv: list[str] | None = None) -> int:
    """`python -m segray.models.tiny_langsam OUT_DIR`: write every model, print the folders."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in {"-h", "--help"}:
        print(__doc__.strip())
        print("\nusage: python -m segray.models.tiny_langsam OUT_DIR")
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    for folder in save_tiny_weights(argv[0]).values():
        print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
