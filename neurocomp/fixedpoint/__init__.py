"""Fixed-point arithmetic, in one place; ``neurocomp.fixedpoint`` is its face.

- ``loihi``: Loihi's neuron and synapse arithmetic, mirroring Lava's bit-accurate models, in plain
  operators (numpy in the Lava process models, torch in the reference simulator);
- ``formats``: the number formats, how the quantizer turns float quantities into those integers
  (called by the quantize passes and by fine-tuning's fake quantization);
- ``attention``: what the dynamic attention processes compute, in integers, and their cost
  (``neurocomp.fixedpoint.attention``; not re-exported here).
"""
from neurocomp.fixedpoint.loihi import (ACT_SHIFT, BIAS_EXP_MAX, BIAS_MANT_MAX, BIAS_MANT_MIN, DECAY_MAX, DECAY_SHIFT,
                                        DECAY_UNITY, MAX_STATE, STATE_BITS, VTH_MAX, VTH_SHIFT, WEIGHT_BITS,
                                        WEIGHT_MAX, WEIGHT_MIN, clip_voltage, cuba_step, dense_lava_sum,
                                        dense_lava_weights, effective_bias, gain_lif_step, group_gain_input, lif_step,
                                        trunc_decay, trunc_shift, window_step_bias, wrap_int32, wrap_state,
                                        wrap_synaptic)
from neurocomp.fixedpoint.formats import (GAIN_SHIFT_MAX, PAYLOAD_BITS, bias_mant_exp, choose_vth, cuba_du, cuba_dv,
                                          cuba_scale, gain_mantissa, gain_shift, input_weight_gain, lif_dv, lif_scale,
                                          lif_theta, ma_dv,
                                          payload_bits_for, quantize_payload, readout_scale, round_weights, voltage_units,
                                          weight_max)
