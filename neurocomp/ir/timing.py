"""Time alignment: how many steps each layer lags its input in Lava, computed once.

Every synapse (Dense/Conv) in Lava sends at step t what it computed at t-1, so a neuron behind
``d`` synapses sees input frame ``t`` at step ``t + d``. Neurons and the RingBuffer source add no
delay; dynamic attention delays its layer by ``T`` (the attention process needs the whole window
before the first gain). A sample therefore needs ``T + depth`` steps alone, and ``T`` steps per sample when
samples run back to back (each layer resets at its own phase: ``(1 + d) mod T``).

A pure function of the graph's structure (node order, kinds and ``meta['timesteps']``): it sits
beside the IR so the backends read it off the graph they run, and ``compile`` stores it in the
manifest (``alignment``) for readers of an artifact.
"""
from __future__ import annotations


def time_alignment(graph) -> dict:
    delays, d = {}, 0
    T = int(graph.meta["timesteps"])
    for node in graph:
        if node.is_synapse:
            d += 1
        if node.kind in ("ma_attention", "spike_attention"):   # dynamic attention waits one window
            d += T
        if node.is_neuron:
            delays[node.name] = d
    return {
        "timesteps": T,
        "layer_delay": delays,                 # steps between input frame t and layer output t
        "depth": d,                            # = delay of the output layer
        "steps_single_sample": T + d,
        "steps_back_to_back": "N*T + depth",
        "reset_offset": {k: (1 + v) % T for k, v in delays.items()},  # LIFReset offset (time_step starts at 1)
        "convention": "layer output for input frame t (0-based) of sample k appears at Lava time step "
                      "k*T + t + 1 + delay (1-based)",
    }
