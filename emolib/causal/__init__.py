"""Stages 3-5, notebooks 03-05: ablating neuron sets, matched random controls, attribution, the time
budget, the statistics of the tests and steering."""
