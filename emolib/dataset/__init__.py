"""Stage 1, notebook 01: the dialogues (template, EmoPrism, endpoint or LM writers), the annotators'
votes and the train/eval splits; the template writer itself is emolib.lm.synth_template."""
