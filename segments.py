"""Segment codes and the tokenised segment: what each token of a sample or window is.

The codes are the values of the shards' `segment` column (DESIGN.md, shard contract); the trainer, the packer, AP
trimming and `inspect` all read them from here. A `Segment` is a run of token ids of one kind; a tokenised sample is
a list of them whose concatenation is its token sequence. A segment marked `context` is shown to the model but never
trained on (loss mask 0 whatever the packing policy): a Markovian chunk's carried-over reasoning.
"""

from dataclasses import dataclass

import numpy as np

SEG_PAD, SEG_TEXT, SEG_PROMPT, SEG_REASONING, SEG_ANSWER, SEG_TEMPLATE = 0, 1, 2, 3, 4, 5
SEGMENT_NAMES = {
    SEG_PAD: "pad",
    SEG_TEXT: "text",
    SEG_PROMPT: "prompt",
    SEG_REASONING: "reasoning",
    SEG_ANSWER: "answer",
    SEG_TEMPLATE: "template",
}


@dataclass(frozen=True)
class Segment:
    kind: int  # SEG_*
    ids: np.ndarray  # uint32 token ids
    think: int = -1  # assistant-turn index of the <think> block this segment belongs to (markers + reasoning), else -1
    context: bool = False  # shown as context only: loss mask 0 under every loss-mask policy
