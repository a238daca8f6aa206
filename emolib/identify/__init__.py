"""Stage 2, notebook 02: counting how often each FFN neuron fires per emotion, LAPE's entropy
selection and its variants, depth profiles, emotion directions and the head-to-head of the two, and the multi-GPU
recording entry point."""
