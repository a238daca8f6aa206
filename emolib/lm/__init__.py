"""The model layer every stage uses: loading models, the classification prompt, the emotion classifier,
batched scoring of many masks and the multi-GPU recording entry point."""
