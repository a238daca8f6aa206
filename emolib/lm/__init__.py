"""The model layer every stage uses: loading models, the classification prompt (its worked examples by the template
writer of dialogues, whose phrase tables are in phrases/), the emotion classifier, the FFN hooks that ablate and push
neurons, and batched scoring of many masks."""
